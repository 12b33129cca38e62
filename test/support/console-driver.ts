/**
 * Test helper: the agent's console module on its own. Says a line, asks `hidden` or `line`
 * (argv[2]) and prints what was answered to stdout as `ANSWER=<json>`. Consoles come from
 * SLIPWAY_CONSOLES, as in the deploy environment.
 */
import { askHidden, askLine, say } from "../../src/agent/console.ts";

say("console test ready");
const answer = process.argv[2] === "line" ? await askLine("Choose one: ") : await askHidden("This site requires the PXE password: ");
say("console test done");
process.stdout.write(`ANSWER=${JSON.stringify(answer)}\n`);
process.exit(0);
