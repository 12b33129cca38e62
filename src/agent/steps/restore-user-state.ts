/**
 * restore-user-state: fetches the association's sealed chunks in order, opens each with the
 * data key (a tampered, reordered, missing or foreign chunk stops the restore naming it), and
 * writes the files into the applied system with owners mapped by name. The restore writes into
 * a staging folder first, so a failure leaves nothing of the state half-restored in place.
 */
import type { StepModule } from "../engine.ts";
import { mount, mustRun, partitionPath, waitForDevice } from "../system.ts";
import { restoreUserState } from "../user-state/restore.ts";
import { receiveUserState } from "../user-state/transfer.ts";
import { TARGET_DIR } from "./apply-image.ts";

export const restoreUserStateStep: StepModule = {
  type: "restore-user-state",
  async run(params: { to?: string }, ctx) {
    let root = ctx.state.target;
    if (params.to) {
      const dev = partitionPath(ctx.expand(params.to));
      await waitForDevice(dev);
      await mount(dev, TARGET_DIR);
      root = TARGET_DIR;
    }
    if (!root) return { status: "failed", message: "Cannot restore user state: no system is applied yet (run apply-image first, or name the partition with \"to\")" };
    const api = ctx.userState();
    const grant = await api.grant("restore");
    const tar = receiveUserState(api, grant, (fetched) => fetched % 8 === 0 && ctx.progress((fetched / grant.chunks) * 100, `${fetched} of ${grant.chunks} chunks verified`));
    const summary = await restoreUserState(tar, { root, signal: ctx.signal, log: (line) => ctx.log(line) });
    for (const f of summary.notRestored) ctx.log(`not restored: ${f.path}: ${f.reason}`);
    for (const o of summary.unmappedOwners) ctx.log(`no ${o.kind} ${o.name ?? `#${o.id}`} in the new system: files keep id ${o.id}`);
    for (const c of summary.conflicts) ctx.log(`${c.path}: ${c.action}`);
    // On disk before the site hears it is done: its "delete after" clock starts with that answer.
    await mustRun("sync", []);
    const done = await api.restored(grant.association, { files: summary.files, notRestored: summary.notRestored.length });
    return {
      status: "succeeded",
      message: `restored ${summary.files} files of association ${grant.association}${summary.notRestored.length ? `; ${summary.notRestored.length} could not be restored (listed below)` : ""}; the stored state is deleted at ${done.deleteAt}`,
    };
  },
};
