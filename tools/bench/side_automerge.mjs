// Automerge (@automerge/automerge 3.x, JavaScript over its Rust core in WebAssembly)
// syncing the same payment entries, in one Node.js process, JSON on stdout.
//
// Each replica is one Automerge document {payments: [...]}, one list entry per record
// of the workload (see payments.py), each added in its own change, as a device would
// add its own payment. One actor writes them all (the most compact case for
// Automerge's column encoding; one actor per paying device would only cost more).
// The changes are made through the low-level backend (`getBackend`): the same
// changes as `Automerge.change` makes, without its proxies, which make building
// 11,000 changes take a minute.
//
//   node side_automerge.mjs build --payments P --records N --delta D --dir DIR
//       writes am-n.bin (the saved document after N entries) and am-nd.bin (N + D)
//   node side_automerge.mjs sync --case full|delta --dir DIR
//       loads A (full: N entries, delta: N + D) and B (full: empty, delta: N), then
//       runs Automerge's sync protocol with the public API, B first:
//       generateSyncMessage / receiveSyncMessage, turn by turn, until neither side
//       has anything to send. Counted: messages, flights (one side's turn with a
//       message), bytes each way. Nothing is signed or verified.
//
// It must never report a sync whose two documents end with different heads.

import * as A from "@automerge/automerge";
import { readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";

const START_S = 1_763_900_000; // the workload's clock (bench_ingest.START_MS), seconds
const BYTES_FIELDS = new Set(["payer", "payee", "admit", "account"]);

function args(argv) {
  const out = { command: argv[0] };
  for (let i = 1; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}

function entry(item) {
  const e = {};
  for (const [k, v] of Object.entries(item)) {
    e[k] = BYTES_FIELDS.has(k) && typeof v === "string" ? Uint8Array.from(Buffer.from(v, "hex")) : v;
  }
  return e;
}

function build(opt) {
  const items = JSON.parse(readFileSync(opt.payments, "utf8"));
  const n = Number(opt.records);
  const d = Number(opt.delta);
  const doc = A.from({ payments: [] });
  const backend = A.getBackend(doc);
  const list = A.getObjectId(doc, "payments");
  const t0 = performance.now();
  for (let i = 0; i < n + d; i++) {
    backend.pushObject(list, entry(items[i]));
    backend.commit(null, START_S + Math.floor(i / 1000));
    if (i + 1 === n) writeFileSync(join(opt.dir, "am-n.bin"), backend.save());
  }
  writeFileSync(join(opt.dir, "am-nd.bin"), backend.save());
  return {
    build_s: (performance.now() - t0) / 1000,
    entries: n + d,
    doc_bytes: statSync(join(opt.dir, "am-nd.bin")).size,
  };
}

function sync(opt) {
  const full = opt.case === "full";
  let a = A.load(readFileSync(join(opt.dir, full ? "am-n.bin" : "am-nd.bin")));
  let b = full ? A.init() : A.load(readFileSync(join(opt.dir, "am-n.bin")));
  const held = b.payments ? b.payments.length : 0;
  let sa = A.initSyncState();
  let sb = A.initSyncState();
  let up = 0;
  let down = 0;
  let messages = 0;
  let flights = 0;
  const t0 = performance.now();
  for (let turn = 0; turn < 100; turn++) {
    let fromB;
    let fromA;
    [sb, fromB] = A.generateSyncMessage(b, sb);
    if (fromB) {
      up += fromB.length;
      messages++;
      flights++;
      [a, sa] = A.receiveSyncMessage(a, sa, fromB);
    }
    [sa, fromA] = A.generateSyncMessage(a, sa);
    if (fromA) {
      down += fromA.length;
      messages++;
      flights++;
      [b, sb] = A.receiveSyncMessage(b, sb, fromA);
    }
    if (!fromB && !fromA) break;
  }
  const took = (performance.now() - t0) / 1000;
  const heads = (doc) => A.getHeads(doc).slice().sort().join(",");
  if (heads(a) !== heads(b) || b.payments.length !== a.payments.length) {
    throw new Error("the two Automerge documents did not converge");
  }
  return {
    wall_s: took, bytes_up: up, bytes_down: down, messages, flights,
    records_moved: b.payments.length - held,
  };
}

function version() {
  const pkg = JSON.parse(readFileSync(new URL("./node_modules/@automerge/automerge/package.json",
                                               import.meta.url), "utf8"));
  return { automerge: pkg.version, node: process.versions.node };
}

const opt = args(process.argv.slice(2));
const commands = { build, sync, version };
if (!commands[opt.command]) {
  console.error("usage: side_automerge.mjs build|sync|version [--option value ...]");
  process.exit(2);
}
console.log(JSON.stringify(commands[opt.command](opt)));
