// Evaluates every flag for a list of units with GrowthBook's own JavaScript SDK
// (@growthbook/growthbook), which fetches the features payload from a Cohort server itself.
//
//   node growthbook.mjs <apiHost> <clientKey> <units.json> <out.json>
//
// units.json: a JSON array of attribute objects, one per unit.
// out.json:   {"sdk": ..., "version": ..., "init": {...}, "features": [keys],
//              "results": [{flagKey: {value, source, ruleId, experiment}, ...}, ...]}
// in the order of the units.
import { readFileSync, writeFileSync } from "node:fs";
import { GrowthBook } from "@growthbook/growthbook";

const [apiHost, clientKey, unitsPath, outPath] = process.argv.slice(2);
if (!apiHost || !clientKey || !unitsPath || !outPath) {
  console.error("usage: node growthbook.mjs <apiHost> <clientKey> <units.json> <out.json>");
  process.exit(2);
}

const units = JSON.parse(readFileSync(unitsPath, "utf8"));

const gb = new GrowthBook({ apiHost, clientKey });
// The SDK's normal loading path: GET {apiHost}/api/features/{clientKey}.
const init = await gb.init({ timeout: 10000 });
if (!init.success || init.source !== "network") {
  console.error(`GrowthBook init did not load from the network: ${JSON.stringify(init)}`);
  process.exit(1);
}
const features = Object.keys(gb.getFeatures()).sort();
if (features.length === 0) {
  console.error("GrowthBook init loaded no features");
  process.exit(1);
}

const results = [];
for (const attributes of units) {
  await gb.setAttributes(attributes);
  const row = {};
  for (const key of features) {
    const r = gb.evalFeature(key);
    const e = r.experimentResult;
    row[key] = {
      value: r.value === undefined ? null : r.value,
      source: r.source,
      ruleId: r.ruleId || "",
      experiment: e
        ? {
            key: r.experiment ? r.experiment.key : null,
            variationId: e.variationId,
            inExperiment: e.inExperiment,
            hashAttribute: e.hashAttribute,
            hashValue: e.hashValue,
          }
        : null,
    };
  }
  results.push(row);
}

writeFileSync(
  outPath,
  JSON.stringify({ sdk: "@growthbook/growthbook", version: gb.version, init, features, results }),
);
gb.destroy();
process.exit(0);
