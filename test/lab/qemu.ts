/**
 * QEMU virtual machines inside a lab namespace, booting real firmware under TCG (no KVM):
 * SeaBIOS or OVMF, from the network (the e1000's iPXE ROM, or OVMF's own PXE or HTTP boot
 * client on a ROM-less virtio-net) or directly from a kernel and initrd. The serial console
 * goes to <lab.dir>/<vm>.serial.log and can be awaited.
 *
 * QEMU writes the console straight into that file, not into a pipe: its 16550 gives up on a
 * byte after a few tries when the output would block (a non-blocking socketpair of ~300 one-byte
 * writes fills whenever the test's event loop is busy for a moment), and a heavily loaded
 * machine then lost whole lines of firmware output. A regular file never blocks.
 *
 * Timeouts given to waitForSerial detect failures; they are no performance assertions.
 * Under TCG on 2 cores a direct kernel boot reaches /init in ~6 s, BIOS iPXE ~10-13 s,
 * UEFI iPXE ~13-19 s, UEFI firmware PXE ~20-27 s, UEFI HTTP boot ~19-24 s: run VMs one
 * after another.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ensureLabArtifacts } from "./artifacts.ts";
import type { Lab, Tap } from "./netns.ts";
import { requirePackages } from "./packages.ts";

export interface DirectBoot {
  kernel: string;
  initrd: string;
  /** Kernel command line; `console=ttyS0` is prepended when it names no console. */
  append: string;
}

export interface VmOptions {
  /**
   * The tap (in the lab namespace) the VM's NIC is plugged into. Without one the machine has
   * no NIC, unless `userNetwork` gives it QEMU's built-in NAT (DHCP server 10.0.2.2, lease
   * 10.0.2.15); neither can network-boot.
   */
  tap?: string | Tap;
  /** With no tap: a NIC on QEMU's user-mode network instead of none. */
  userNetwork?: boolean;
  /** Fixed MAC address, e.g. "52:54:00:77:00:01". */
  mac: string;
  /** SMBIOS system UUID (iPXE's ${uuid}; firmware PXE's option 97). */
  uuid: string;
  firmware: "bios" | "uefi";
  /**
   * "e1000" (default): QEMU's e1000 whose ROM (efi-e1000.rom) holds legacy and EFI iPXE.
   * "virtio-pxe": virtio-net without an option ROM, so OVMF's own PXE client boots (UEFI only).
   * "virtio-http": the same NIC with OVMF's PXE switched off (fw_cfg `IPv4PXESupport` and
   * `IPv6PXESupport` = n), so its first boot option is UEFI HTTP boot over IPv4 (UEFI only).
   */
  nic?: "e1000" | "virtio-pxe" | "virtio-http";
  /** Boot this kernel/initrd directly (-kernel/-initrd) instead of from the network. */
  kernel?: DirectBoot;
  /** Guest memory, default 256 MiB. */
  memoryMiB?: number;
  /** A name for logs and `-name` (default vm-<random>). */
  name?: string;
  /** A raw disk image file, attached as virtio-blk after the NIC in boot order. */
  disk?: string;
  /** Let the guest restart (default: a reboot makes QEMU exit, as -no-reboot does). */
  allowReboot?: boolean;
  /** Extra QEMU arguments, appended last. */
  extraArgs?: string[];
}

export interface WaitOptions {
  /** Fail after this long (default 120 s). Failure detection only, not a performance bound. */
  timeoutMs?: number;
  /** Only match serial output from this offset on (e.g. a previous `vm.serial().length`). */
  from?: number;
  /**
   * Also match a line still being written. Default false: only complete lines (up to the
   * last newline) are searched, so `([^\r\n]*)` never captures half a line.
   */
  partialLines?: boolean;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class Vm {
  readonly name: string;
  readonly lab: Lab;
  /** Full QEMU command line (for logs). */
  readonly args: string[];
  /** performance.now() when QEMU was started. */
  readonly startedAt: number;
  /** Where the serial console is also written. */
  readonly serialLog: string;
  /** Resolves when QEMU exits (poweroff, -no-reboot reboot, kill). */
  readonly exited: Promise<VmExit>;
  private readonly child: ChildProcess;
  private text = "";
  private stderr = "";
  /** The log file, opened for reading; QEMU writes it through a descriptor of its own. */
  private readonly readFd: number;
  private readonly poll: NodeJS.Timeout;
  private readonly chunk = Buffer.alloc(64 * 1024);
  private readonly waiters = new Set<() => void>();
  private exitInfo: VmExit | undefined;

  constructor(lab: Lab, name: string, args: string[], serialLog: string) {
    this.lab = lab;
    this.name = name;
    this.args = args;
    this.serialLog = serialLog;
    const writeFd = openSync(serialLog, "w");
    this.readFd = openSync(serialLog, "r");
    this.startedAt = performance.now();
    try {
      this.child = lab.spawn("qemu-system-x86_64", args, { stdio: ["pipe", writeFd, "pipe"] });
    } finally {
      closeSync(writeFd); // the child has its own copy
    }
    this.poll = setInterval(() => this.drain(), 20);
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString("utf8");
    });
    this.child.stdin?.on("error", () => {});
    this.exited = new Promise((resolve) => {
      const finish = (info: VmExit) => {
        if (this.exitInfo) return;
        clearInterval(this.poll);
        this.drain(); // everything QEMU wrote before it exited
        closeSync(this.readFd);
        this.exitInfo = info;
        for (const w of this.waiters) w();
        resolve(info);
      };
      this.child.once("exit", (code, signal) => finish({ code, signal }));
      this.child.once("error", (e) => {
        this.stderr += String(e);
        finish({ code: -1, signal: null });
      });
    });
  }

  /** Reads what QEMU appended to the log since the last time and wakes the waiters. */
  private drain(): void {
    let grew = false;
    for (;;) {
      const n = readSync(this.readFd, this.chunk, 0, this.chunk.length, null);
      if (n === 0) break;
      this.text += this.chunk.toString("latin1", 0, n);
      grew = true;
    }
    if (grew) for (const w of this.waiters) w();
  }

  /** Serial console output so far (latin1; includes firmware escape sequences and \r). */
  serial(): string {
    return this.text;
  }

  /** QEMU's own stderr so far. */
  qemuStderr(): string {
    return this.stderr;
  }

  /** Milliseconds since QEMU was started. */
  elapsedMs(): number {
    return performance.now() - this.startedAt;
  }

  /** Whether QEMU has exited. */
  hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /**
   * Resolves with the first match of `pattern` in the serial output (from `opts.from`, complete
   * lines only unless `opts.partialLines`); rejects on timeout or if QEMU exits first, with the serial tail in the message.
   */
  waitForSerial(pattern: RegExp, opts: WaitOptions = {}): Promise<RegExpExecArray> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const from = opts.from ?? 0;
    const re = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""));
    return new Promise((resolve, reject) => {
      const check = () => {
        const end = opts.partialLines || this.exitInfo ? this.text.length : this.text.lastIndexOf("\n") + 1;
        const m = end > from ? re.exec(this.text.slice(from, end)) : null;
        if (m) {
          finish();
          resolve(m);
        } else if (this.exitInfo) {
          finish();
          reject(this.failure(`exited (${this.exitInfo.code ?? this.exitInfo.signal}) before serial matched ${pattern}`));
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(this.failure(`serial did not match ${pattern} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves when QEMU exits; rejects after `timeoutMs` (default 60 s). */
  async waitForExit(opts: { timeoutMs?: number } = {}): Promise<VmExit> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.failure(`did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Types into the serial console (e.g. keys for an iPXE prompt). */
  write(text: string): void {
    this.child.stdin?.write(text);
  }

  /** Stops QEMU (SIGTERM, then SIGKILL). */
  async kill(): Promise<void> {
    await this.lab.stop(this.child, 2000);
    await this.exited;
  }

  private failure(what: string): Error {
    const tail = this.text.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc/g, "").replace(/[\b]/g, "").slice(-3000);
    const err = this.stderr.trim() ? `\n--- qemu stderr ---\n${this.stderr.trim().slice(-2000)}` : "";
    return new Error(`VM ${this.name} ${what} (after ${Math.round(this.elapsedMs())} ms; log ${this.serialLog})\n--- serial tail ---\n${tail}${err}`);
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Starts a VM inside the lab namespace. It is killed by `lab.close()` and at process exit. */
export async function startVm(lab: Lab, opts: VmOptions): Promise<Vm> {
  requirePackages("qemu-system-x86", "ipxe-qemu");
  if (!MAC_RE.test(opts.mac)) throw new Error(`bad MAC ${opts.mac}`);
  if (!UUID_RE.test(opts.uuid)) throw new Error(`bad UUID ${opts.uuid}`);
  const nic = opts.nic ?? "e1000";
  if (nic !== "e1000" && opts.firmware !== "uefi") throw new Error(`nic ${nic} (OVMF's own network boot) needs firmware uefi`);
  const tap = typeof opts.tap === "string" ? opts.tap : opts.tap?.name;
  if (!tap && !opts.kernel) throw new Error("a VM without a tap cannot network-boot: give it kernel: { … }");
  const name = opts.name ?? `vm-${randomBytes(3).toString("hex")}`;
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`bad VM name ${name}`);

  const args = [
    "-name", name,
    "-accel", "tcg",
    "-machine", opts.firmware === "uefi" ? "q35" : "pc",
    "-m", String(opts.memoryMiB ?? 256),
    // -nographic makes SeaBIOS mirror its (and iPXE's) console to the serial port.
    "-nographic", "-monitor", "none", "-serial", "stdio",
    ...(opts.allowReboot ? [] : ["-no-reboot"]),
    "-uuid", opts.uuid,
  ];
  if (tap) args.push("-netdev", `tap,id=n0,ifname=${tap},script=no,downscript=no`);
  else if (opts.userNetwork) args.push("-netdev", "user,id=n0");

  const netBoot = !opts.kernel;
  let device = nic === "e1000" ? `e1000,netdev=n0,mac=${opts.mac}` : `virtio-net-pci,netdev=n0,mac=${opts.mac},romfile=`;
  if (netBoot) device += ",bootindex=1";
  // A direct boot has no use for the NIC's iPXE ROM; skipping it saves its POST prompt.
  else if (nic === "e1000") device += ",romfile=";
  if (tap || opts.userNetwork) args.push("-device", device);
  else args.push("-nic", "none");
  if (nic === "virtio-http") {
    // OVMF orders a NIC's options PXEv4, PXEv6, HTTPv4, HTTPv6; a PXE server on the link would
    // answer the first, and with PXEv4 alone off PXEv6 still costs ~110 s of DHCPv6 timeouts.
    // Without the PXE driver the firmware starts at HTTPv4, as a machine whose setup says
    // "PXE: disabled, HTTP boot: enabled" does.
    args.push("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n");
  }
  if (opts.disk) {
    args.push("-drive", `if=none,id=d0,format=raw,file=${opts.disk}`, "-device", `virtio-blk-pci,drive=d0${netBoot ? ",bootindex=2" : ""}`);
  }

  if (opts.firmware === "uefi") {
    const { ovmf } = await ensureLabArtifacts();
    const vars = path.join(lab.dir, `${name}.OVMF_VARS.fd`);
    await copyFile(ovmf.vars, vars);
    args.push(
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${ovmf.code}`,
      "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
    );
  }
  if (opts.kernel) {
    const append = /(^|\s)console=/.test(opts.kernel.append) ? opts.kernel.append : `console=ttyS0 ${opts.kernel.append}`.trim();
    args.push("-kernel", opts.kernel.kernel, "-initrd", opts.kernel.initrd, "-append", append);
  } else if (opts.firmware === "bios") {
    // Network first, then the disk: what a machine set to PXE-boot does after iPXE exits.
    args.push("-boot", opts.disk ? "order=nc" : "n");
  }
  args.push(...(opts.extraArgs ?? []));
  return new Vm(lab, name, args, path.join(lab.dir, `${name}.serial.log`));
}
