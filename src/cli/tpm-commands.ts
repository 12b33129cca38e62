/** `slipway tpm roots [--set FILE | --clear]`: the TPM manufacturer certificates EK certificates must chain to. */
import fs from "node:fs";
import { CliError, ExitCode } from "./command.ts";
import { commandGroup } from "./command-group.ts";

type Roots = { certificates: { subject: string; issuer: string; fingerprint: string; notAfter: string }[] };

export const tpmCommand = commandGroup("tpm", "TPM binding: the manufacturers whose endorsement key certificates the site trusts", {
  roots: {
    summary: "Show, set or clear the TPM manufacturer certificates (roots and intermediates) EK certificates must chain to",
    options: {
      set: { type: "string", value: "FILE", description: "A PEM bundle of the TPM vendors' root and intermediate CA certificates" },
      clear: { type: "boolean", description: "No roots: EKs are recorded without an EK certificate check" },
    },
    notes: "With roots set, an EK is recorded (by an enrollment, an approval, or an imported certificate) only when the TPM's EK certificate\n" +
      "is for that key and chains to one of them. Setting and clearing need site.write and are audited.",
    async run(inv) {
      const file = inv.str("set");
      if (file !== undefined && inv.values.clear === true) throw new CliError("Give --set FILE or --clear, not both", ExitCode.USAGE);
      let r: Roots;
      if (file !== undefined) {
        let pem: string;
        try {
          pem = fs.readFileSync(file, "utf8");
        } catch (err) {
          throw new CliError(`Cannot read ${file}: ${(err as Error).message}`, ExitCode.USAGE);
        }
        r = await inv.api().put<Roots>("/api/v1/tpm/ek-roots", { pem });
      } else if (inv.values.clear === true) {
        await inv.api().delete("/api/v1/tpm/ek-roots");
        inv.out.result(undefined, () => inv.out.line("No TPM manufacturer roots: EKs are recorded without a certificate check"));
        return;
      } else {
        r = await inv.api().get<Roots>("/api/v1/tpm/ek-roots");
      }
      inv.out.result(r, () => inv.out.table(r.certificates, [
        { header: "SUBJECT", value: (c) => c.subject.replace(/\n/g, ", "), max: 40 },
        { header: "ISSUER", value: (c) => c.issuer.replace(/\n/g, ", "), max: 40 },
        { header: "FINGERPRINT", value: (c) => c.fingerprint.slice(0, 30) + "…" },
        { header: "EXPIRES", value: (c) => c.notAfter },
      ], "No TPM manufacturer roots: EKs are recorded without a certificate check."));
    },
  },
});
