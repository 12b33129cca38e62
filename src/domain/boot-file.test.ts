import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { bootFileFor } from "./boot-file.ts";

describe("PXE boot file", () => {
  const base = "http://10.0.0.1:8080";

  it("firmware PXE gets the loader for its firmware by TFTP; UEFI x64 the configured one when there is one", () => {
    assert.deepEqual(bootFileFor("bios", false, base), { path: "undionly.kpxe", via: "tftp" });
    assert.deepEqual(bootFileFor("uefi", false, base), { path: "ipxe.efi", via: "tftp" });
    assert.deepEqual(bootFileFor("uefi", false, base, "snponly.efi"), { path: "snponly.efi", via: "tftp" });
    assert.deepEqual(bootFileFor("bios", false, base, "snponly.efi"), { path: "undionly.kpxe", via: "tftp" }, "a UEFI loader is never handed to BIOS");
  });

  it("UEFI HTTP boot gets the loader's URL on the link's boot server", () => {
    assert.deepEqual(bootFileFor("uefi-http", false, base), { path: `${base}/ipxe/loaders/ipxe.efi`, via: "http" });
    assert.deepEqual(bootFileFor("uefi-http", false, base, "snponly.efi"), { path: `${base}/ipxe/loaders/snponly.efi`, via: "http" });
  });

  it("iPXE, whatever the firmware under it, gets its boot script's URL", () => {
    for (const fw of ["bios", "uefi", "uefi-http"] as const) assert.deepEqual(bootFileFor(fw, true, base), { path: `${base}/ipxe/start`, via: "ipxe-script" });
  });

  it("an architecture without a loader gets nothing, not even as iPXE", () => {
    assert.equal(bootFileFor("unsupported", false, base), undefined);
    assert.equal(bootFileFor("unsupported", true, base), undefined);
  });
});
