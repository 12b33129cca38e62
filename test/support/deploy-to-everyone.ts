/**
 * Test helper run inside a lab namespace, where the site's API is reachable only from within:
 * signs in as admin (changing a one-time password to PASSWORD-2) and sets up deployToEveryone.
 *
 *   node test/support/deploy-to-everyone.ts API_URL CA_FILE PASSWORD
 */
import fs from "node:fs";
import { httpsRequest } from "./site.ts";
import { deployToEveryone } from "./deployment.ts";

const [api, caFile, password] = process.argv.slice(2);
const ca = fs.readFileSync(caFile, "utf8");
const session = await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password } });
if (session.status !== 201 && session.status !== 200) throw new Error(`Cannot sign in: ${session.status} ${session.text}`);
const token = session.body.token as string;
const admin = (method: string, p: string, body?: unknown) => httpsRequest(api, ca, method, p, { token, body });
const changed = await admin("POST", "/api/v1/me/password", { currentPassword: password, newPassword: `${password}-2` });
if (changed.status !== 204) throw new Error(`Cannot change the one-time password: ${changed.status} ${changed.text}`);
await deployToEveryone(admin);
process.stdout.write("deployed to everyone\n");
