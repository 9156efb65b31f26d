// `cohort bench experiments`' JavaScript peer: GrowthBook's own JavaScript SDK
// (@growthbook/growthbook) assigning the same units to the same experiment as Cohort, on one
// thread (Node.js runs JavaScript on one). `cohort bench experiments` runs it as
// `node -e <this file> < spec.json`; by hand:
//
//   echo '{"growthbook": "tests/clients/node/node_modules/@growthbook/growthbook",
//          "payload": {...}, "flag": "checkout-redesign", "ids": 100000, "prefix": "u",
//          "repeat": 3}' | node scripts/bench_experiments_sdk.js
//
// The units are "<prefix>1" … "<prefix><ids>". Each mode runs `repeat` times; each run's wall
// and CPU seconds are timed inside this process (process.hrtime, process.cpuUsage), after the
// SDK is loaded and the IDs are built. Modes:
// - client_eval_feature: GrowthBookClient.evalFeature(flag, {attributes: {id}}), the SDK's
//   multi-user path for servers;
// - eval_feature: one GrowthBook instance, `await setAttributes({id})`, then evalFeature(flag),
//   as a page or a per-process instance uses it (it remembers each unit's exposure for dedup);
// - run: the same instance's run(experiment) on the experiment of the flag's rule;
// - floor: the SDK's own hash and chooseVariation over precomputed bucket ranges, nothing else.
// Output (stdout, one line of JSON): {"sdk", "version", "node", "modes": {mode: {"wall": [...],
// "cpu": [...], "variations": "0110-…"}}}, one character per unit ('-' for not in the
// experiment), from each mode's last run.
"use strict";
const fs = require("fs");
const path = require("path");

const spec = JSON.parse(fs.readFileSync(0, "utf8"));
const dir = path.resolve(spec.growthbook);
const { GrowthBook, GrowthBookClient } = require(path.join(dir, "dist", "cjs", "index.js"));
const util = require(path.join(dir, "dist", "cjs", "util.js"));
const version = require(path.join(dir, "package.json")).version;

const flag = spec.flag;
const payload = spec.payload;
const rule = payload.features[flag].rules[0];
const ids = new Array(spec.ids);
for (let i = 0; i < spec.ids; i++) ids[i] = spec.prefix + (i + 1);

function mark(result) {
  return result && result.inExperiment ? String(result.variationId) : "-";
}

async function timed(body) {
  const out = new Array(ids.length);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await body(out);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1e6, variations: out.join("") };
}

const modes = {
  client_eval_feature: async (out) => {
    const client = new GrowthBookClient({});
    client.initSync({ payload });
    for (let i = 0; i < ids.length; i++) {
      out[i] = mark(client.evalFeature(flag, { attributes: { id: ids[i] } }).experimentResult);
    }
  },
  eval_feature: async (out) => {
    const gb = new GrowthBook({});
    gb.initSync({ payload });
    for (let i = 0; i < ids.length; i++) {
      await gb.setAttributes({ id: ids[i] });
      out[i] = mark(gb.evalFeature(flag).experimentResult);
    }
    gb.destroy();
  },
  run: async (out) => {
    const gb = new GrowthBook({});
    gb.initSync({ payload });
    const experiment = {
      key: rule.key,
      variations: rule.variations,
      weights: rule.weights,
      coverage: rule.coverage,
      hashAttribute: rule.hashAttribute,
      hashVersion: rule.hashVersion,
      seed: rule.seed,
      meta: rule.meta,
      name: rule.name,
      phase: rule.phase,
    };
    for (let i = 0; i < ids.length; i++) {
      await gb.setAttributes({ id: ids[i] });
      out[i] = mark(gb.run(experiment));
    }
    gb.destroy();
  },
  floor: async (out) => {
    const ranges = util.getBucketRanges(rule.variations.length, rule.coverage, rule.weights);
    for (let i = 0; i < ids.length; i++) {
      const n = util.hash(rule.seed, ids[i], rule.hashVersion);
      const v = n === null ? -1 : util.chooseVariation(n, ranges);
      out[i] = v < 0 ? "-" : String(v);
    }
  },
};

(async () => {
  const result = { sdk: "@growthbook/growthbook", version, node: process.version, modes: {} };
  for (const [name, body] of Object.entries(modes)) {
    if (spec.modes && !spec.modes.includes(name)) continue;
    const m = { wall: [], cpu: [], variations: "" };
    for (let r = 0; r < spec.repeat; r++) {
      const t = await timed(body);
      m.wall.push(t.wall);
      m.cpu.push(t.cpu);
      m.variations = t.variations;
    }
    result.modes[name] = m;
    process.stderr.write(`  JavaScript SDK ${name}: ${m.wall.map((w) => w.toFixed(2)).join(", ")} s\n`);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + "\n");
  process.exit(1);
});
