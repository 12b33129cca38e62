/** Ends the run and restarts the machine (into the system it just installed). */
import type { StepModule } from "../engine.ts";

export const reboot: StepModule = {
  type: "reboot",
  async run() {
    return { status: "reboot", message: "restarting" };
  },
};
