/**
 * Test helper: a required PXE deployment for every device (a collection whose rule is `true`),
 * so approved machines get the deploy environment from their boot script rather than being sent
 * to their local disk for having nothing to run. Its one step never runs in the network boot
 * tests, whose initramfs only prints a marker.
 */
type Admin = (method: string, p: string, body?: unknown) => Promise<{ status: number; text: string }>;

const TASK_SEQUENCE = `
name: Network boot test
steps:
  - name: Say hello
    type: run-command
    with: { command: "echo hello" }
`;

/** `rule` narrows "every device" when a test needs one left out. */
export async function deployToEveryone(admin: Admin, rule = "true"): Promise<void> {
  for (const [p, body] of [
    ["/api/v1/collections", { name: "Everyone", rule }],
    ["/api/v1/task-sequences", { document: TASK_SEQUENCE, format: "yaml" }],
    ["/api/v1/deployments", { name: "Network boot test", taskSequence: "Network boot test", collection: "Everyone", purpose: "required", bootPaths: ["pxe"] }],
  ] as const) {
    const r = await admin("POST", p, body);
    if (r.status !== 201) throw new Error(`Cannot set up the test deployment: POST ${p} answered ${r.status} ${r.text}`);
  }
}
