import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { assessPosture, postureWarnings, type PostureDeployment, type PostureInput } from "./posture.ts";
import { ASSURANCE_LEVELS, effectiveMinimum } from "./assurance.ts";

const lab0 = [{ name: "lab0", address: "10.0.0.1" }];
const dep = (over: Partial<PostureDeployment>): PostureDeployment => ({
  id: over.name ?? "d", name: "d", enabled: true, usesSecrets: false, minimumAssurance: null, allowSniffableEnrollment: false, ...over,
});
const input = (over: Partial<PostureInput>): PostureInput => ({ pxeLinks: lab0, pxePasswordSet: false, enrollmentApproval: false, deployments: [], ...over });

describe("network-boot posture", () => {
  it("a secret-using deployment at its default minimum (password) leaves the site protected, even without a PXE password", () => {
    const p = assessPosture(input({ deployments: [dep({ name: "Join", usesSecrets: true })] }));
    assert.equal(p.sniffableEnrollment, true, "PXE enrollments are sniffable without a password");
    assert.equal(p.unprotected, false);
    assert.deepEqual(p.sniffableDeployments, []);
    assert.deepEqual(p.warnings, []);
  });

  it("a secret-using deployment at sniffable, with PXE served and no password nor approval, is unprotected and named in the warning", () => {
    const p = assessPosture(input({ pxeLinks: [...lab0, { name: "lab1", address: "10.0.1.1" }],
      deployments: [dep({ name: "Join", usesSecrets: true, minimumAssurance: "sniffable" }), dep({ name: "Plain", allowSniffableEnrollment: true })] }));
    assert.equal(p.unprotected, true);
    assert.deepEqual(p.exposed.map((d) => d.name), ["Join"]);
    assert.deepEqual(p.sniffableDeployments.map((d) => [d.name, d.why, d.usesSecrets]), [["Join", "minimumAssurance", true], ["Plain", "allowSniffableEnrollment", false]]);
    assert.equal(p.warnings.length, 1);
    assert.match(p.warnings[0], /^WARNING: network boot is not protected: anyone on PXE links lab0, lab1 who sniffs/);
    assert.match(p.warnings[0], /reach a deployment that uses secrets: "Join"\./);
  });

  it("each protection alone ends the warning: a PXE password, enrollment approval, no PXE served, the deployment disabled or requiring more", () => {
    const open = dep({ name: "Join", usesSecrets: true, minimumAssurance: "sniffable" });
    assert.equal(assessPosture(input({ deployments: [open] })).unprotected, true);
    assert.equal(assessPosture(input({ deployments: [open], pxePasswordSet: true })).unprotected, false);
    assert.equal(assessPosture(input({ deployments: [open], enrollmentApproval: true })).unprotected, false);
    assert.equal(assessPosture(input({ deployments: [open], pxeLinks: [] })).unprotected, false);
    assert.equal(assessPosture(input({ deployments: [{ ...open, enabled: false }] })).unprotected, false);
    assert.equal(assessPosture(input({ deployments: [{ ...open, minimumAssurance: "password" }] })).unprotected, false);
    // allowSniffableEnrollment is overridden by an explicit minimum above sniffable.
    assert.deepEqual(assessPosture(input({ deployments: [dep({ allowSniffableEnrollment: true, minimumAssurance: "approved" })] })).sniffableDeployments, []);
  });

  it("a scoped caller's warning counts the deployments it may not see without naming them", () => {
    const p = assessPosture(input({ deployments: [dep({ name: "Join", usesSecrets: true, minimumAssurance: "sniffable" })] }));
    const [w] = postureWarnings({ ...p, exposed: [] }, 1);
    assert.match(w, /secrets: 1 outside your scopes\./);
    assert.ok(!w.includes("Join"));
  });

  it("unprotected exactly when PXE is served, no password or approval, and an enabled secret-using deployment's effective minimum is sniffable", () => {
    const arbDep = fc.record({
      id: fc.uuid(), name: fc.string({ maxLength: 8 }), enabled: fc.boolean(), usesSecrets: fc.boolean(),
      minimumAssurance: fc.option(fc.constantFrom(...ASSURANCE_LEVELS), { nil: null }), allowSniffableEnrollment: fc.boolean(),
    });
    fc.assert(fc.property(fc.boolean(), fc.boolean(), fc.boolean(), fc.array(arbDep, { maxLength: 6 }), (served, password, approval, deployments) => {
      const p = assessPosture({ pxeLinks: served ? lab0 : [], pxePasswordSet: password, enrollmentApproval: approval, deployments });
      const reachable = deployments.some((d) => d.enabled && d.usesSecrets && effectiveMinimum(d, true) === "sniffable");
      assert.equal(p.unprotected, served && !password && !approval && reachable);
      assert.equal(p.warnings.length > 0, p.unprotected);
      // Every listed deployment accepts a sniffable enrollment; every exposed one is listed, enabled and uses secrets.
      for (const d of p.sniffableDeployments) assert.equal(effectiveMinimum(deployments.find((x) => x.id === d.id)!, d.usesSecrets), "sniffable");
      for (const d of p.exposed) assert.ok(d.enabled && d.usesSecrets && p.sniffableDeployments.includes(d));
    }), { numRuns: 500 });
  });
});
