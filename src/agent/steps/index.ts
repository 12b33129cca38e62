/** Every step the deploy environment can run, by type. Adding a step is adding a file here. */
import type { StepModule } from "../engine.ts";
import { applyImage } from "./apply-image.ts";
import { configureOs } from "./configure-os.ts";
import { format } from "./format.ts";
import { installBootloader } from "./install-bootloader.ts";
import { partitionDisk } from "./partition-disk.ts";
import { reboot } from "./reboot.ts";
import { runCommand } from "./run-command.ts";
import { setVariable } from "./set-variable.ts";
import { captureUserStateStep } from "./capture-user-state.ts";
import { restoreUserStateStep } from "./restore-user-state.ts";

export const stepModules: Map<string, StepModule> = new Map(
  [partitionDisk, format, applyImage, installBootloader, configureOs, setVariable, runCommand, reboot, captureUserStateStep, restoreUserStateStep].map((m) => [m.type, m]),
);
