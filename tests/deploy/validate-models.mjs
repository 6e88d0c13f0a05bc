// Validates the KEDA and Argo Workflows objects in the YAML files given as arguments against the
// published models (npm @kubernetes-models/keda and @kubernetes-models/argo-workflows), offline:
//   1. each object's model validates it against the CRD's JSON schema (types, required fields,
//      enums, formats);
//   2. the object is type-checked as a literal of the model's TypeScript interface, whose excess
//      property check rejects any field the CRD does not define (the schemas alone allow them):
//      the strict mode that kubernetes-validate --strict gives the core kinds.
// Objects of other API groups are skipped (the core kinds go to kubernetes-validate). Prints one
// line per object and exits 1 if any fails, or if no object was checked.
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
// The models live where scripts/install-deploy-validators put them (FERRY_K8S_MODELS), else here.
const modules = process.env.FERRY_K8S_MODELS ?? join(here, "node_modules");
const require = createRequire(join(modules, "noop.js"));
const ts = require("typescript");
const { parseAllDocuments } = require("yaml");

const groups = {
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
  "argoproj.io/v1alpha1": "@kubernetes-models/argo-workflows/argoproj.io/v1alpha1",
};

const objects = [];
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.error(`${file}: ${doc.errors[0].message}`);
      process.exit(1);
    }
    const object = doc.toJS();
    if (object && groups[object.apiVersion]) objects.push({ file, object });
  }
}
if (objects.length === 0) {
  console.error("no KEDA or Argo object found");
  process.exit(1);
}

let failed = 0;
const typed = [];
for (const [i, { file, object }] of objects.entries()) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const module = `${groups[object.apiVersion]}/${object.kind}`;
  let Model;
  try {
    // The packages export ESM only: import the model's file itself.
    Model = (await import(pathToFileURL(join(modules, `${module}.js`)).href))[object.kind];
  } catch (e) {
    console.log(`FAIL ${file} ${name}: no model ${module} (${e.message})`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok   ${file} ${name}: schema`);
  } catch (e) {
    console.log(`FAIL ${file} ${name}: ${e.message}`);
    failed++;
  }
  typed.push(`import type { I${object.kind} as T${i} } from "${module}";\n` +
    `export const o${i}: T${i} = ${JSON.stringify(object, null, 2)};\n`);
}

// The TypeScript check: one module of typed literals, compiled against the models' .d.ts files.
const dir = mkdtempSync(join(tmpdir(), "ferry-models-"));
try {
  const source = join(dir, "objects.ts");
  writeFileSync(source, typed.join("\n"));
  const program = ts.createProgram([source], {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    typeRoots: [],
    baseUrl: modules,
    paths: { "*": [join(modules, "*")] },
  });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  for (const d of diagnostics) {
    const where = d.file ? d.file.getLineAndCharacterOfPosition(d.start) : null;
    const line = where ? d.file.text.split("\n")[where.line].trim() : "";
    console.log(`FAIL types: ${ts.flattenDiagnosticMessageText(d.messageText, " ")} at ${line}`);
    failed++;
  }
  if (diagnostics.length === 0) console.log(`ok   ${objects.length} objects: no field outside the models' types`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
