// The named statements of sql/queries/*.sql, read as booking_rpc/db/queries.py reads them: a statement is
// headed by `-- name: <file stem>.<statement>`, the `--` lines right after it describe it, and its text
// runs to the next `-- name:` or the end of the file (trailing `;` dropped). The peer runs these texts, so
// its SQL is booking-rpc's, byte for byte.
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

const NAME_LINE = /^--\s*name:\s*(\S+)\s*$/;

function parseFile(path) {
  const stem = basename(path, '.sql');
  const found = new Map();
  let name = null;
  let body = [];
  let inDescription = false;
  const finish = () => {
    if (name === null) return;
    const text = body.join('\n').trim().replace(/;+$/, '').trimEnd();
    if (!text) throw new Error(`${path}: statement ${name} is empty`);
    found.set(name, text);
  };
  for (const line of readFileSync(path, 'utf8').split(/\r?\n/)) {
    const match = NAME_LINE.exec(line.trim());
    if (match) {
      finish();
      name = match[1];
      if (!name.startsWith(`${stem}.`)) throw new Error(`${path}: statement name ${name} must start with ${stem}.`);
      body = [];
      inDescription = true;
      continue;
    }
    if (name === null) continue;
    if (inDescription && line.trimStart().startsWith('--')) continue;
    inDescription = false;
    body.push(line);
  }
  finish();
  return found;
}

export function loadQueries(folder) {
  const statements = new Map();
  for (const file of readdirSync(folder).filter((f) => f.endsWith('.sql')).sort()) {
    for (const [name, text] of parseFile(join(folder, file))) {
      if (statements.has(name)) throw new Error(`duplicate statement name ${name}`);
      statements.set(name, text);
    }
  }
  return statements;
}
