/**
 * Every command that talks to the site API, by name. main.ts merges these with the
 * server-side commands (init, up, audit verify); each group lives in its own module.
 */
import type { Command } from "./command.ts";
import { accountCommands } from "./account-commands.ts";
import { deviceCommand } from "./device-commands.ts";
import { enrollmentCommand } from "./enrollment-commands.ts";
import { tpmCommand } from "./tpm-commands.ts";
import { collectionCommand } from "./collection-commands.ts";
import { variableCommand } from "./variable-commands.ts";
import { taskSequenceCommand } from "./task-sequence-commands.ts";
import { deploymentCommand } from "./deployment-commands.ts";
import { adminCommand, roleCommand } from "./admin-commands.ts";
import { auditCommand, keysCommand, siteCommand } from "./site-commands.ts";
import { certificateCommand, credentialCommand, pxeCommand, runCommand } from "./identity-commands.ts";
import { dpCommand } from "./dp-commands.ts";
import { associationCommand } from "./association-commands.ts";
import { privacyCommand } from "./privacy-commands.ts";

export const clientCommands: Record<string, Command> = {
  ...accountCommands,
  device: deviceCommand,
  enrollment: enrollmentCommand,
  tpm: tpmCommand,
  collection: collectionCommand,
  variable: variableCommand,
  ts: taskSequenceCommand,
  deployment: deploymentCommand,
  admin: adminCommand,
  role: roleCommand,
  audit: auditCommand,
  keys: keysCommand,
  site: siteCommand,
  certificate: certificateCommand,
  credential: credentialCommand,
  pxe: pxeCommand,
  run: runCommand,
  dp: dpCommand,
  association: associationCommand,
  privacy: privacyCommand,
};
