/** Makes a file system on a partition (ext4 or FAT32 in this deploy environment). */
import { mustRun, partitionPath, unmountDevice, waitForDevice } from "../system.ts";
import type { StepModule } from "../engine.ts";

export const format: StepModule = {
  type: "format",
  async run(params: { partition: string; filesystem: string; label?: string }, ctx) {
    const dev = partitionPath(ctx.expand(params.partition));
    await waitForDevice(dev);
    await unmountDevice(dev);
    const label = params.label === undefined ? [] : [ctx.expand(params.label)];
    if (params.filesystem === "ext4") {
      await mustRun("mkfs.ext4", ["-F", "-q", ...(label.length ? ["-L", label[0]] : []), dev], { signal: ctx.signal });
    } else if (params.filesystem === "vfat") {
      await mustRun("mkfs.vfat", ["-F", "32", ...(label.length ? ["-n", label[0]] : []), dev], { signal: ctx.signal });
    } else {
      return { status: "failed", message: `Cannot format ${dev} as ${params.filesystem}: this deploy environment makes ext4 and vfat only` };
    }
    if (dev === ctx.state.root) ctx.state.target = undefined;
    return { status: "succeeded", message: `${dev}: ${params.filesystem}${label.length ? ` "${label[0]}"` : ""}` };
  },
};
