/** Boot images: the kernel and initrd that PXE boot scripts boot, stored by digest. */
import { randomUUID } from "node:crypto";
import type { Sql } from "./db.ts";

export type BootImage = {
  id: string; name: string; kernelSha256: string; kernelSize: number; initrdSha256: string; initrdSize: number;
  cmdline: string; isDefault: boolean; createdBy: string; createdAt: string;
};

type R = Record<string, unknown>;
const img = (r: R): BootImage => ({
  id: String(r.id), name: String(r.name), kernelSha256: String(r.kernel_sha256), kernelSize: Number(r.kernel_size),
  initrdSha256: String(r.initrd_sha256), initrdSize: Number(r.initrd_size), cmdline: String(r.cmdline),
  isDefault: Number(r.is_default) === 1, createdBy: String(r.created_by), createdAt: String(r.created_at),
});

export class BootImageStore {
  readonly #db: Sql;
  constructor(db: Sql) {
    this.#db = db;
  }
  /** Adds or replaces the image with this name; `isDefault` moves the default to it. */
  async put(b: Omit<BootImage, "id">): Promise<BootImage> {
    if (b.isDefault) await this.#db.run(`UPDATE boot_images SET is_default = 0`);
    await this.#db.run(
      `INSERT INTO boot_images (id, name, kernel_sha256, kernel_size, initrd_sha256, initrd_size, cmdline, is_default, created_by, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET kernel_sha256 = excluded.kernel_sha256, kernel_size = excluded.kernel_size,
         initrd_sha256 = excluded.initrd_sha256, initrd_size = excluded.initrd_size, cmdline = excluded.cmdline,
         is_default = excluded.is_default, created_by = excluded.created_by, created_at = excluded.created_at`,
      [randomUUID(), b.name, b.kernelSha256, b.kernelSize, b.initrdSha256, b.initrdSize, b.cmdline, b.isDefault, b.createdBy, b.createdAt]);
    return (await this.byName(b.name))!;
  }
  async byName(name: string): Promise<BootImage | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM boot_images WHERE name = ?`, [name]);
    return r && img(r);
  }
  async defaultImage(): Promise<BootImage | undefined> {
    const r = await this.#db.get<R>(`SELECT * FROM boot_images WHERE is_default = 1`);
    return r && img(r);
  }
  async list(): Promise<BootImage[]> {
    return (await this.#db.all<R>(`SELECT * FROM boot_images ORDER BY name`)).map(img);
  }
  /** Whether any boot image uses this blob (only those may be served to machines). */
  async servesBlob(sha256: string): Promise<boolean> {
    return !!(await this.#db.get(`SELECT 1 AS x FROM boot_images WHERE kernel_sha256 = ? OR initrd_sha256 = ?`, [sha256, sha256]));
  }
  async delete(name: string): Promise<number> {
    return (await this.#db.run(`DELETE FROM boot_images WHERE name = ?`, [name])).changes;
  }
}
