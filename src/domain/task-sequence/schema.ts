/**
 * What a task sequence document may contain: the limits, the zod schema of every field, the
 * registry of step types with the parameters (`with`) each takes, the TypeScript types of a
 * valid document, and the JSON Schema published for editors.
 *
 * validate.ts walks a document with these schemas; to add a step type, add an entry to
 * `stepTypes` (and to `runAsStepTypeNames` if it runs something as another account).
 */

import { z } from "zod";

export const MAX_DOCUMENT_BYTES = 1024 * 1024;
/** Top-level steps are at depth 1; a group at depth 16 may hold no steps. */
export const MAX_STEP_DEPTH = 16;
/** Counting the steps inside groups and the groups themselves. */
export const MAX_STEPS = 1000;
export const MAX_VARIABLES = 1000;
export const MAX_TIMEOUT_SECONDS = 86_400;

export const JSON_SCHEMA_ID = "https://slipway.dev/schemas/task-sequence.json";

// ---------------------------------------------------------------------------------------------
// Building blocks

const NO_CONTROL_CHARACTERS = /^[^\x00-\x1f\x7f]*$/;

/** One line of text a person reads: a name, a label. */
function line(max: number): z.ZodString {
  return z
    .string()
    .min(1)
    .max(max)
    .regex(NO_CONTROL_CHARACTERS, { error: "Must not contain control characters such as line breaks or tabs" });
}

export const variableNamePattern = /^[A-Za-z_][A-Za-z0-9_.]{0,127}$/;

/** Names that say they hold a password; such a value does not belong in a document. */
export const passwordLikeName = /pass(?:word|wd|phrase)/i;

export const variableName = z
  .string()
  .regex(variableNamePattern, {
    error: 'Must be a variable name: a letter or "_", then up to 127 letters, digits, "_" or "."',
  })
  // Copied into a plain object by assignment, this name would set the prototype instead.
  .refine((name) => name !== "__proto__", { error: '"__proto__" is reserved' });

/** A variable a document may give a literal value: anything but a password. */
export const plainVariableName = variableName.refine((name) => !passwordLikeName.test(name), {
  error: "Looks like a password: keep passwords in secret variables and reference them with runAs",
});

const IMAGE_REFERENCE = /^(?:sha256:[0-9a-f]{64}|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$/;
/** An image by name (`debian-12-base`) or by content digest (`sha256:` and 64 hex digits). */
export const imageReference = z.string().regex(IMAGE_REFERENCE, {
  error: 'Must be an image name (letters, digits, ".", "_", "-") or "sha256:" followed by 64 lowercase hex digits',
});

/** A disk or partition as the agent names it: an index ("0", "0:2") or a device path. */
const device = line(256);
const path = line(4096);
const absolutePath = line(4096).regex(/^\/(?!.*(^|\/)\.\.?(\/|$))/, "Must be an absolute path without . or .. segments");

/**
 * A Debian package, optionally with =version, /release or :arch. Never starts with "-", so a
 * package name cannot smuggle an option onto the package manager's command line.
 */
const packageName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9+._:=~/-]{0,255}$/, {
  error: 'Must be a package name: starts with a letter or digit, then letters, digits or + . _ : = ~ / -',
});

/** Longest volume label each file system takes, in bytes. */
const LABEL_LIMITS = { ext4: 16, xfs: 12, vfat: 11, ntfs: 32 } as const;
const filesystems = ["ext4", "xfs", "vfat", "ntfs"] as const;

// ---------------------------------------------------------------------------------------------
// Step types and their parameters

/** Every step type but `group`, mapped to the schema of its `with`. */
export const stepTypes = {
  "partition-disk": z.strictObject({
    disk: device,
    scheme: z.enum(["gpt", "mbr", "gpt-bios"]),
  }),
  format: z
    .strictObject({
      partition: device,
      filesystem: z.enum(filesystems),
      label: line(32).optional(),
    })
    .superRefine((w, ctx) => {
      // Zod may call this on a partly invalid object, so check what it relies on.
      if (typeof w.label !== "string" || !Object.hasOwn(LABEL_LIMITS, w.filesystem)) return;
      const max = LABEL_LIMITS[w.filesystem];
      if (new TextEncoder().encode(w.label).length > max) {
        ctx.addIssue({ code: "custom", path: ["label"], message: `Must be at most ${max} bytes for ${w.filesystem}` });
      }
    }),
  "apply-image": z.strictObject({
    image: imageReference,
    partition: device.optional(),
  }),
  /**
   * Reads users' files from the old system (read-only) before the disk is wiped: every home
   * directory and /root by default, plus `include`, minus `exclude` and (unless turned off) the
   * default cache rules. `from` is the old system's root partition; without it the agent finds
   * the one partition holding a Linux system.
   */
  "capture-user-state": z.strictObject({
    from: device.optional(),
    include: z.array(absolutePath).max(1000).optional(),
    exclude: z.array(line(4096)).max(1000).optional(),
    defaultExcludes: z.boolean().optional(),
  }),
  /** Writes them back into the applied system (or the partition `to`), owners mapped by name. */
  "restore-user-state": z.strictObject({
    to: device.optional(),
  }),
  "run-command": z.strictObject({
    command: z.string().min(1).max(32_768),
    successCodes: z.array(z.int().min(-2_147_483_648).max(4_294_967_295)).min(1).max(64).optional(),
    workingDirectory: path.optional(),
  }),
  "set-variable": z.strictObject({
    name: plainVariableName,
    value: z.string().max(32_768),
  }),
  "install-bootloader": z.strictObject({ disk: device }),
  /** Writes the host name and network settings into the applied system; values may use ${Variable}. */
  "configure-os": z.strictObject({
    hostname: line(253).optional(),
    network: z
      .discriminatedUnion("mode", [
        z.strictObject({ mode: z.literal("dhcp"), interface: line(15).optional() }),
        z.strictObject({
          mode: z.literal("static"),
          interface: line(15).optional(),
          address: line(64),
          gateway: line(64).optional(),
          dns: z.array(line(64)).max(4).optional(),
        }),
      ])
      .optional(),
  }),
  reboot: z.strictObject({}),
  "disable-encryption": z.strictObject({}),
  "enable-encryption": z.strictObject({ method: line(64).optional() }),
  "install-packages": z.strictObject({
    packages: z.array(packageName).min(1).max(1000),
  }),
};

export type ActionStepType = keyof typeof stepTypes;
export type StepType = "group" | ActionStepType;
export const stepTypeNames: readonly StepType[] = ["group", ...(Object.keys(stepTypes) as ActionStepType[])];

/** The step types that run a program, and so may run it as another account. */
export const runAsStepTypeNames = ["run-command", "install-packages"] as const satisfies readonly ActionStepType[];
export type RunAsStepType = (typeof runAsStepTypeNames)[number];

// ---------------------------------------------------------------------------------------------
// Fields shared by documents and steps

export const fields = {
  documentName: line(200),
  description: z.string().max(4096),
  schemaUrl: z.string().max(2048),
  variableValue: z.string().max(32_768),
  stepName: line(200),
  /** Checked again with parseExpression; JSON Schema can only say "a string". */
  condition: z.string().min(1).max(4096),
  continueOnError: z.boolean(),
  disabled: z.boolean(),
  timeoutSeconds: z.int().min(1).max(MAX_TIMEOUT_SECONDS),
  runAs: z.strictObject({
    /** The name of a secret variable, never its value. */
    secret: variableName,
  }),
};

// ---------------------------------------------------------------------------------------------
// The shape of a valid document

export type RunAs = { secret: string };
export type StepParameters<T extends ActionStepType> = z.output<(typeof stepTypes)[T]>;

type StepCommon = {
  name: string;
  description?: string;
  /** An expression (see ../expression.ts) over task-sequence variables. */
  condition?: string;
  continueOnError?: boolean;
  disabled?: boolean;
  timeoutSeconds?: number;
};

export type GroupStep = StepCommon & { type: "group"; steps: Step[] };

export type ActionStep = {
  [T in ActionStepType]: StepCommon & { type: T; with: StepParameters<T> } & (T extends RunAsStepType
    ? { runAs?: RunAs }
    : {});
}[ActionStepType];

export type Step = GroupStep | ActionStep;

export type TaskSequenceDocument = {
  name: string;
  description?: string;
  /** Default values, by variable name. */
  variables?: Record<string, string>;
  steps: Step[];
};

// ---------------------------------------------------------------------------------------------
// JSON Schema

type JsonSchema = Record<string, unknown>;

/** JSON Schema patterns take no flags: spell `/i` out as [pP][aA]… */
function caseless(source: string): string {
  return source.replace(/[a-z]/g, (c) => `[${c}${c.toUpperCase()}]`);
}

function toJson(schema: z.ZodType): JsonSchema {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", io: "input" }) as JsonSchema;
  return rest;
}

function commonStepProperties(): Record<string, JsonSchema> {
  return {
    name: toJson(fields.stepName),
    description: toJson(fields.description),
    condition: { ...toJson(fields.condition), description: "An expression over task-sequence variables, e.g. Firmware == 'uefi'" },
    continueOnError: toJson(fields.continueOnError),
    disabled: toJson(fields.disabled),
    timeoutSeconds: toJson(fields.timeoutSeconds),
  };
}

/**
 * The published JSON Schema (draft 2020-12) of a task sequence document. It checks shape only;
 * validateTaskSequence also checks conditions, sibling names, nesting depth and step count.
 */
export function taskSequenceJsonSchema(): JsonSchema {
  const defs: Record<string, JsonSchema> = {
    step: {
      type: "object",
      required: ["name", "type"],
      properties: { type: { enum: [...stepTypeNames] } },
      oneOf: stepTypeNames.map((t) => ({ $ref: `#/$defs/${t}-step` })),
    },
    "group-step": {
      type: "object",
      properties: {
        ...commonStepProperties(),
        type: { const: "group" },
        steps: { type: "array", items: { $ref: "#/$defs/step" } },
      },
      required: ["name", "type", "steps"],
      additionalProperties: false,
    },
  };
  for (const t of Object.keys(stepTypes) as ActionStepType[]) {
    const parameters = toJson(stepTypes[t]);
    const needsWith = Array.isArray(parameters.required) && parameters.required.length > 0;
    const runsAs = (runAsStepTypeNames as readonly string[]).includes(t);
    defs[`${t}-step`] = {
      type: "object",
      properties: {
        ...commonStepProperties(),
        type: { const: t },
        with: parameters,
        ...(runsAs ? { runAs: { ...toJson(fields.runAs), description: "Run as the account held by this secret variable" } } : {}),
      },
      required: needsWith ? ["name", "type", "with"] : ["name", "type"],
      additionalProperties: false,
    };
  }
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: JSON_SCHEMA_ID,
    title: "Slipway task sequence",
    description: "The steps Slipway's agent runs on a machine to deploy an operating system.",
    type: "object",
    properties: {
      $schema: toJson(fields.schemaUrl),
      name: toJson(fields.documentName),
      description: toJson(fields.description),
      variables: {
        type: "object",
        propertyNames: { pattern: variableNamePattern.source, not: { pattern: caseless(passwordLikeName.source) } },
        additionalProperties: toJson(fields.variableValue),
        maxProperties: MAX_VARIABLES,
      },
      steps: { type: "array", minItems: 1, maxItems: MAX_STEPS, items: { $ref: "#/$defs/step" } },
    },
    required: ["name", "steps"],
    additionalProperties: false,
    $defs: defs,
  };
}
