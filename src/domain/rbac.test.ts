import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { administrativePermissions, allPermissions, builtinRoles, customRoleRefusal, grantRefusals, isEverything, lacking, permissionsOf, type Permission } from "./rbac.ts";

const builtin = (id: string) => ({ ...builtinRoles.find((r) => r.id === id)!, builtin: true });
const custom = (id: string, permissions: string[]) => ({ id, builtin: false, permissions });
const held = (...roles: string[]) => permissionsOf(roles.map(builtin));
const allBut = (...except: string[]) => allPermissions.filter((p) => !except.includes(p));

describe("grant rules", () => {
  it("a Security Administrator assigns built-in roles other than Full Administrator and Recovery Agent, even with permissions it lacks", () => {
    assert.deepEqual(grantRefusals(held("security-administrator"), [builtin("deployment-administrator")]), []);
    assert.notDeepEqual(grantRefusals(held("security-administrator"), [builtin("full-administrator")]), []);
  });

  it("recovery.read: no Full Administrator holds it, only a Full Administrator assigns the Recovery Agent role, no custom role carries it", () => {
    assert.ok(!held("full-administrator").has("recovery.read"));
    assert.ok(isEverything(held("full-administrator")));
    assert.deepEqual(grantRefusals(held("full-administrator"), [builtin("recovery-agent")]), []);
    assert.match(grantRefusals(held("security-administrator"), [builtin("recovery-agent")]).join(), /only a Full Administrator assigns it/);
    assert.match(grantRefusals(held("security-administrator", "recovery-agent"), [builtin("recovery-agent")]).join(), /only a Full Administrator/);
    assert.match(customRoleRefusal(["device.read", "recovery.read"]) ?? "", /only in the built-in Recovery Agent role/);
    assert.equal(customRoleRefusal(["device.read"]), null);
  });

  it("admin.grant-any does not lift the rule for custom roles", () => {
    const why = grantRefusals(held("security-administrator"), [custom("harmless", ["device.read", "recovery.read"])]);
    assert.equal(why.length, 1);
    assert.match(why[0], /recovery\.read/);
  });

  it("roles adding up to every permission need a holder of every permission, whoever may grant each", () => {
    const nearly = new Set(allBut("keys.rotate", "recovery.read")) as Set<Permission>;
    const roles = [builtin("security-administrator"), custom("rest", allBut("keys.rotate", "recovery.read"))];
    assert.deepEqual(grantRefusals(nearly, [roles[1]]), []);
    assert.deepEqual(grantRefusals(nearly, [roles[0]]), []);
    assert.match(grantRefusals(nearly, roles).join(), /every permission/);
    assert.deepEqual(grantRefusals(new Set(administrativePermissions), roles), []);
    const allBuiltins = builtinRoles.filter((r) => r.id !== "full-administrator").map((r) => builtin(r.id));
    assert.match(grantRefusals(held("security-administrator"), allBuiltins).join(), /every permission/);
  });

  it("a granted set is always within what the granter holds, plus built-in roles for admin.grant-any, and never everything unless the granter is", () => {
    const roleArb = fc.oneof(
      fc.constantFrom(...builtinRoles.map((r) => builtin(r.id))),
      fc.subarray(allPermissions, { minLength: 1 }).map((p) => custom("c", p)),
    );
    fc.assert(fc.property(fc.subarray(allPermissions), fc.array(roleArb, { maxLength: 5 }), (granterList, roles) => {
      const granter = new Set(granterList);
      if (grantRefusals(granter, roles).length) return;
      const extra = granter.has("admin.grant-any") ? permissionsOf(roles.filter((r) => r.builtin && r.id !== "full-administrator" && r.id !== "recovery-agent")) : new Set();
      // A Full Administrator may assign the Recovery Agent role (recovery.read), and only it.
      const recovery = isEverything(granter) ? permissionsOf(roles.filter((r) => r.builtin && r.id === "recovery-agent")) : new Set();
      for (const p of permissionsOf(roles)) assert.ok(granter.has(p) || extra.has(p) || recovery.has(p), `${p} granted by a granter lacking it`);
      if (isEverything(permissionsOf(roles))) assert.ok(isEverything(granter));
    }), { numRuns: 2000 });
  });

  it("lacking names the permissions a role editor does not hold, and unknown ones", () => {
    assert.deepEqual(lacking(held("recovery-agent"), ["device.read", "recovery.read", "keys.rotate", "no.such"]), ["keys.rotate", "no.such"]);
  });
});
