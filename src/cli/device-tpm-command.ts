/** `slipway device tpm DEVICE [--import FILE | --clear]`: the TPM endorsement key a device is bound to. */
import fs from "node:fs";
import { CliError, ExitCode } from "./command.ts";
import { apiPath } from "./client.ts";
import type { Subcommand } from "./command-group.ts";

type DeviceTpm = { ekFingerprint: string | null; source?: string; recordedAt?: string; recordedBy?: string };

export const deviceTpmSubcommand: Subcommand = {
  summary: "Show, import or clear the TPM endorsement key (EK) a device is bound to",
  args: "DEVICE",
  options: {
    import: { type: "string", value: "FILE", description: "Import the EK: a PEM public key or certificate (the vendor's platform certificate), or the TPM's public area in base64" },
    clear: { type: "boolean", description: "Forget the EK (a replaced motherboard or TPM); the device's next enrollment above sniffable records the one it proves" },
  },
  notes: "A machine that proves it holds the EK on record enrolls as `tpm`: unattended, no PXE password, and it gets its secrets.\n" +
    "Importing and clearing need the device.approve permission and are audited.",
  async run(inv) {
    const device = inv.positionals[0];
    const file = inv.str("import");
    if (file !== undefined && inv.values.clear === true) throw new CliError("Give --import FILE or --clear, not both", ExitCode.USAGE);
    let t: DeviceTpm;
    if (file !== undefined) {
      let ek: string;
      try {
        ek = fs.readFileSync(file, "utf8");
      } catch (err) {
        throw new CliError(`Cannot read ${file}: ${(err as Error).message}`, ExitCode.USAGE);
      }
      t = await inv.api().put<DeviceTpm>(apiPath`/api/v1/devices/${device}/tpm`, { ek });
    } else if (inv.values.clear === true) {
      await inv.api().delete(apiPath`/api/v1/devices/${device}/tpm`);
      inv.out.result(undefined, () => inv.out.line(`Cleared the TPM endorsement key of device "${device}"`));
      return;
    } else {
      t = await inv.api().get<DeviceTpm>(apiPath`/api/v1/devices/${device}/tpm`);
    }
    inv.out.result(t, () => t.ekFingerprint === null
      ? inv.out.line(`Device "${device}" has no TPM endorsement key on record`)
      : inv.out.fields([["EK fingerprint", t.ekFingerprint], ["Recorded by", `${t.recordedBy} (${t.source})`], ["Recorded at", t.recordedAt ?? null]]));
  },
};
