#!/usr/bin/env node
// Validate FHIR resources with npm `fhir` (FHIR.js by Lantana Group, not us): R4 resources with
// its built-in R4 definitions (fhir@4.12.0), STU3 resources with the STU3 3.0.1 definitions that
// ship inside fhir@3.3.1 (installed as `fhir-stu3`), loaded into the same validator through
// ParseConformance as FHIR.js documents.
//
// Input: a JSON array or NDJSON file of {"id": "<label>", "fhirVersion": "STU3" | "R4",
// "resource": {...}}. Output: one line per resource (`ok <id>` or `FAIL <id>: <error>`), or with
// --json one JSON array of {"id", "valid", "errors", "warnings"}. Exit status 1 when any resource
// fails, 2 on bad input.
//
// FHIR.js checks element names (errorOnUnexpected), cardinality, JSON types (a string "72" is not
// a decimal) and codes against required value sets (Observation.status, Quantity.comparator,
// Narrative.status, Identifier.use). It misses impossible dates and two `value[x]` at once:
// fhir.resources (validate.py) catches those.
//
// Messages of severity "error" fail a resource. So does every "warning", except the one FHIR.js
// cannot avoid: a LOINC code "not found in value set" for Observation.code, whose binding
// (observation-codes) is an example binding over LOINC, which FHIR.js does not ship.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.CIBMTR_INTEROP_NODE_DIR || path.join(here, '..', 'node');
const require = createRequire(path.join(nodeDir, 'package.json'));
const { Fhir, ParseConformance, Versions } = require('fhir');

function stu3Validator() {
  const dir = path.join(path.dirname(require.resolve('fhir-stu3/package.json')), 'profiles', 'stu3');
  const parser = new ParseConformance(false, Versions.STU3);
  // Value sets (and the v3 code systems some of them include) before the structure definitions
  // that bind to them.
  for (const file of ['valuesets.json', 'v3-codesystems.json', 'profiles-types.json', 'profiles-resources.json']) {
    parser.parseBundle(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
  }
  return new Fhir(parser);
}

const validators = {};
function validator(version) {
  if (!validators[version]) {
    if (version === 'R4') validators[version] = new Fhir();
    else if (version === 'STU3') validators[version] = stu3Validator();
    else return null;
  }
  return validators[version];
}

function readItems(file) {
  const text = fs.readFileSync(file, 'utf8');
  const items = text.trimStart().startsWith('[')
    ? JSON.parse(text)
    : text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  if (!Array.isArray(items) || !items.every((i) => i && typeof i === 'object')) {
    throw new Error('expected a JSON array or NDJSON of objects');
  }
  return items;
}

const tolerated = (m) =>
  m.severity === 'warning' && /\.code$/.test(m.location) && /\(http:\/\/loinc\.org\) not found in value set/.test(m.message);

function validate(item) {
  const fhir = validator(item.fhirVersion);
  if (!fhir) return { errors: [`fhirVersion: ${JSON.stringify(item.fhirVersion)} is not STU3 or R4`], warnings: [] };
  const r = item.resource;
  if (!r || typeof r !== 'object' || typeof r.resourceType !== 'string') return { errors: ['resourceType: missing'], warnings: [] };
  let result;
  try {
    result = fhir.validate(r, { errorOnUnexpected: true });
  } catch (e) {
    return { errors: [`validator threw: ${e && e.message ? e.message : e}`], warnings: [] };
  }
  const text = (m) => `${m.location}: ${m.message}`;
  const errors = [];
  const warnings = [];
  for (const m of result.messages || []) {
    if (m.severity === 'error' || (m.severity === 'warning' && !tolerated(m))) errors.push(text(m));
    else if (m.severity === 'warning') warnings.push(text(m));
  }
  if (!result.valid && errors.length === 0) errors.push('validator said invalid without an error message');
  return { errors, warnings };
}

function main() {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const file = args.find((a) => !a.startsWith('--'));
  if (!file) {
    console.error('usage: node validate.mjs [--json] FILE');
    return 2;
  }
  let items;
  try {
    items = readItems(file);
  } catch (e) {
    console.error(`validate.mjs: cannot read ${file}: ${e.message}`);
    return 2;
  }
  const report = items.map((item, n) => {
    const { errors, warnings } = validate(item);
    return { id: String(item.id ?? `#${n}`), valid: errors.length === 0, errors, warnings };
  });
  const failed = report.filter((r) => !r.valid).length;
  if (json) {
    process.stdout.write(JSON.stringify(report) + '\n');
  } else {
    for (const r of report) console.log(r.valid ? `ok ${r.id}` : `FAIL ${r.id}: ${r.errors.join('; ')}`);
    console.log(`npm fhir (4.12.0; STU3 from 3.3.1): ${report.length - failed} valid, ${failed} invalid`);
  }
  return failed ? 1 : 0;
}

process.exitCode = main();
