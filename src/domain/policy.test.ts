import { test } from "node:test";
import assert from "node:assert/strict";
import { compilePolicy, imageReferences, type PolicyInput } from "./policy.ts";

const digest = (c: string) => `sha256:${c.repeat(64)}`;

function input(steps: unknown[], imageManifests?: Record<string, string | null>, contentSources?: Record<string, string[]>): PolicyInput {
  return {
    device: { id: "d1", name: "pc" }, bootPath: "pxe", now: new Date(), ttlSeconds: 60, signingKeyFingerprint: "f",
    deployments: [{
      id: "dep", name: "Build", purpose: "required", enabled: true, bootPaths: ["pxe"], availableFrom: null, availableUntil: null,
      taskSequence: { id: "ts", name: "TS", version: 1, digest: "sha256:x", document: { steps } }, scopes: [], secretReferences: [],
    }],
    imageManifests, contentSources,
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
    { image: "debian-base", manifest: digest("b"), sources: [] },
    { image: "not-imported", manifest: null, sources: [] },
    { image: digest("a"), manifest: digest("a"), sources: [] },
  ]);
});

test("each image lists the distribution points holding its manifest, in the order given", () => {
  const steps = [{ type: "apply-image", with: { image: "debian-base" } }, { type: "apply-image", with: { image: "not-imported" } }];
  const sources = { [digest("b")]: ["https://dp-a.example:8445", "https://dp-b.example:8445"], [digest("c")]: ["https://dp-c.example"] };
  const p = compilePolicy(input(steps, { "debian-base": digest("b"), "not-imported": null }, sources));
  assert.deepEqual(p.deployments[0].content, [
    { image: "debian-base", manifest: digest("b"), sources: ["https://dp-a.example:8445", "https://dp-b.example:8445"] },
    { image: "not-imported", manifest: null, sources: [] },
  ]);
  const own = compilePolicy(input(steps, { "debian-base": "constructor" }, {}));
  assert.deepEqual(own.deployments[0].content[0].sources, [], "only the caller's own entries count");
});

test("an image the caller did not resolve has no manifest, whatever its name", () => {
  const steps = ["constructor", "toString", "hasOwnProperty", "debian-base"].map((image) => ({ type: "apply-image", with: { image } }));
  for (const p of [compilePolicy(input(steps)), compilePolicy(input(steps, {}))]) {
    assert.deepEqual(p.deployments[0].content.map((c) => c.manifest), [null, null, null, null]);
  }
});
