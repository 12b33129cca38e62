/**
 * Runs the agent as its own process, as the deploy environment's /init does, with the
 * configuration folder and "kernel command line" from the environment. Tests start it under
 * `script` so that it has a terminal, as on a machine's console.
 */
import { main } from "../../src/agent/main.ts";

const code = await main({ configDir: process.env.SLIPWAY_CONFIG_DIR!, cmdline: process.env.SLIPWAY_CMDLINE!, reboot: false });
process.exit(code);
