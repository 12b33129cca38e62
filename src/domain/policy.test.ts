import { test } from "node:test";
import assert from "node:assert/strict";
import { compilePolicy, imageReferences, type PolicyInput } from "./policy.ts";

const digest = (c: string) => `sha256:${c.repeat(64)}`;

function input(steps: unknown[], imageManifests?: Record<string, string | null>): PolicyInput {
  return {
    device: { id: "d1", name: "pc" }, bootPath: "pxe", now: new Date("2026-11-25T12:00:00Z"), ttlSeconds: 60, signingKeyFingerprint: "f",
    deployments: [{
      id: "dep", name: "Build", purpose: "required", enabled: true, bootPaths: ["pxe"], availableFrom: null, availableUntil: null,
      taskSequence: { id: "ts", name: "TS", version: 1, digest: "sha256:x", document: { steps } }, scopes: [], secretReferences: [],
    }],
    imageManifests,
  };
}

test("content lists each applied image once, sorted, with the manifest the caller resolved", () => {
  const steps = [
    { type: "apply-image", with: { image: "debian-base" } },
    { type: "group", steps: [{ type: "apply-image", with: { image: digest("a") } }, { type: "apply-image", with: { image: "debian-base" } }] },
    { type: "apply-image", with: { image: "skipped" }, disabled: true },
    { type: "apply-image", with: { image: "not-imported" } },
  ];
  assert.deepEqual(imageReferences({ steps }), ["debian-base", "not-imported", digest("a")]);
  const p = compilePolicy(input(steps, { "debian-base": digest("b"), [digest("a")]: digest("a"), "not-imported": null }));
  assert.deepEqual(p.deployments[0].content, [
    { image: "debian-base", manifest: digest("b") },
    { image: "not-imported", manifest: null },
    { image: digest("a"), manifest: digest("a") },
  ]);
});

test("an image the caller did not resolve has no manifest, whatever its name", () => {
  const steps = ["constructor", "toString", "hasOwnProperty", "debian-base"].map((image) => ({ type: "apply-image", with: { image } }));
  for (const p of [compilePolicy(input(steps)), compilePolicy(input(steps, {}))]) {
    assert.deepEqual(p.deployments[0].content.map((c) => c.manifest), [null, null, null, null]);
  }
});
