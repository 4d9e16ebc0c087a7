/**
 * No query is built by string concatenation of input (issue #7 item 3), checked
 * statically over `src/**\/*.ts` with a small TypeScript lexer (strings,
 * comments, regex literals and template literals with nested `${}`):
 *
 * - SQL: every SQL-shaped template literal with `${…}` is a postgres.js tagged
 *   template (`sql`/`tx`/… — values become bind parameters); no SQL-shaped
 *   literal is joined with `+` to anything but another literal; every
 *   `.unsafe(…)` call is on the allowlist below, which names file and reason.
 * - GraphQL: the Shopify documents are constant template literals (no `${`),
 *   parse as GraphQL, and are the only documents the channel sends; no template
 *   or concatenation in src/channels/shopify builds a GraphQL document from
 *   parts. Input travels only in `variables`.
 *
 * Untagged SQL-shaped templates WITHOUT `${` are constants (the migrations, the
 * default POS queries) and pass. The lexer itself is tested on planted code.
 */
import assert from "node:assert/strict";
import { parse } from "graphql";
import * as documents from "../src/channels/shopify/documents.ts";

const ROOT = new URL("../", import.meta.url);

/** postgres.js clients (the tag's last name segment) that turn `${…}` into bind parameters. */
const SQL_TAGS = new Set(["sql", "tx", "connection", "session"]);

/** `.unsafe(` calls that are allowed: the file, the exact argument text, and why it is safe. */
const UNSAFE_ALLOWLIST: { file: string; argument: string; reason: string }[] = [
  {
    file: "src/ledger/migrate.ts",
    argument: "migration.sql",
    reason: "ledger migrations: constant SQL text in src/ledger/migrations.ts (no `${` there, checked here)",
  },
  {
    file: "src/ledger/migrate.ts",
    argument: "index.sql",
    reason:
      "online index builds: constant SQL text in ONLINE_INDEXES, src/ledger/migrations.ts (no `${` there)",
  },
  {
    file: "src/ledger/migrate.ts",
    argument: "step.sql",
    reason: "contract steps: constant SQL text in CONTRACT_STEPS, src/ledger/migrations.ts (no `${` there)",
  },
  {
    file: "src/pos/stock.ts",
    argument: "bound.query, bound.params as string[]",
    reason: "operator-configured POS_STOCK_QUERY / POS_PRODUCT_QUERY (config-validated SELECTs); " +
      "tienda_id, producto_id and SKU are bound as $n parameters, never spliced in",
  },
  {
    file: "src/pos/stock.ts",
    argument: "batched, params as never",
    reason: "operator-configured POS_STOCK_QUERY (config-validated) inside a constant lateral join; " +
      "the products' tienda_id, producto_id and SKU are bound as text[] parameters, never spliced in",
  },
  {
    file: "src/pos/catalog.ts",
    argument: "this.#page, params as never",
    reason: "operator-configured POS_CATALOG_QUERY (config-validated) inside a constant keyset page; " +
      "the stores, the last row seen and the page size are bound as $n parameters, never spliced in",
  },
];

const SQL_SHAPE = [
  /\bselect\b[\s\S]*\bfrom\b/i,
  /\binsert\s+into\b/i,
  /\bupdate\s+[\w."$]+\s+set\b/i,
  /\bdelete\s+from\b/i,
  /\b(create|drop|alter|truncate)\s+(table|schema|index|view|function)\b/i,
];
const isSql = (text: string) => SQL_SHAPE.some((re) => re.test(text));
const GRAPHQL_SHAPE = /(^|[\s{(])(query|mutation|subscription|fragment)\b[\s\S]*[{(]|^\s*\{[\s\S]*\}\s*$/;

interface Literal {
  /** Offsets of the opening and one past the closing delimiter. */
  start: number;
  end: number;
  line: number;
  kind: "string" | "template";
  /** Template: the text with `${}` where each substitution was; string: the raw source. */
  text: string;
  substitutions: string[];
  /** Template: the tag expression's name chain (`this.sql`, `tx`), "" when untagged. */
  tag: string;
}

interface Lexed {
  /** The source with comment, string, regex and template text blanked (offsets kept). */
  code: string;
  literals: Literal[];
}

const REGEX_BEFORE = new Set("(,=:[!&|?{};+-*%<>~^".split(""));
const REGEX_KEYWORDS = new Set([
  "return",
  "typeof",
  "case",
  "do",
  "else",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "yield",
  "await",
  "instanceof",
]);

/** Splits TypeScript source into code and literals. Good enough for this codebase's style, not a parser. */
export function lex(src: string): Lexed {
  const code = src.split("");
  const literals: Literal[] = [];
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (code[k] !== "\n") code[k] = " ";
  };
  const lineAt = (offset: number) => src.slice(0, offset).split("\n").length;

  /** The previous non-blank character of the code so far, and the word ending there. */
  const previous = (pos: number): { char: string; word: string; at: number } => {
    let k = pos - 1;
    while (k >= 0 && /\s/.test(code[k])) k--;
    if (k < 0) return { char: "", word: "", at: -1 };
    let w = k;
    while (w >= 0 && /[\w$]/.test(code[w])) w--;
    return { char: code[k], word: code.slice(w + 1, k + 1).join(""), at: k };
  };

  const isRegexStart = (pos: number) => {
    const { char, word } = previous(pos);
    if (char === "" || REGEX_BEFORE.has(char)) return true;
    return REGEX_KEYWORDS.has(word);
  };

  /** The tag of a template starting at `pos`: `tx<Row[]>\`…\`` → "tx"; untagged → "". */
  const tagBefore = (pos: number): string => {
    let { char, at } = previous(pos);
    if (char === ">" && code[at - 1] !== "=") {
      let depth = 0;
      for (; at >= 0; at--) {
        if (code[at] === ">") depth++;
        else if (code[at] === "<" && --depth === 0) break;
      }
      ({ char, at } = previous(at));
    }
    let k = at;
    while (k >= 0 && /[\w$.]/.test(code[k])) k--;
    return code.slice(k + 1, at + 1).join("");
  };

  const skipQuoted = (start: number, quote: string): number => {
    let i = start + 1;
    while (i < src.length && src[i] !== quote && src[i] !== "\n") i += src[i] === "\\" ? 2 : 1;
    return i + 1;
  };

  const skipRegex = (start: number): number => {
    let i = start + 1;
    let inClass = false;
    while (i < src.length && src[i] !== "\n") {
      const c = src[i];
      if (c === "\\") i++;
      else if (c === "[") inClass = true;
      else if (c === "]") inClass = false;
      else if (c === "/" && !inClass) break;
      i++;
    }
    i++;
    while (i < src.length && /[a-z]/i.test(src[i])) i++;
    return i;
  };

  /** Lexes code from `i`; with `untilBrace`, stops after the `}` closing a `${`. */
  const lexCode = (start: number, untilBrace: boolean): number => {
    let i = start;
    let depth = 0;
    while (i < src.length) {
      const c = src[i];
      const next = src[i + 1];
      if (c === "/" && next === "/") {
        const end = src.indexOf("\n", i) < 0 ? src.length : src.indexOf("\n", i);
        blank(i, end);
        i = end;
      } else if (c === "/" && next === "*") {
        const close = src.indexOf("*/", i + 2);
        const end = close < 0 ? src.length : close + 2;
        blank(i, end);
        i = end;
      } else if (c === '"' || c === "'") {
        const end = skipQuoted(i, c);
        literals.push({
          start: i,
          end,
          line: lineAt(i),
          kind: "string",
          text: src.slice(i, end),
          substitutions: [],
          tag: "",
        });
        blank(i + 1, end - 1);
        i = end;
      } else if (c === "`") {
        i = lexTemplate(i);
      } else if (c === "/" && isRegexStart(i)) {
        const end = skipRegex(i);
        blank(i, end);
        i = end;
      } else {
        if (c === "{") depth++;
        if (c === "}") {
          if (untilBrace && depth === 0) return i + 1;
          depth--;
        }
        i++;
      }
    }
    return i;
  };

  const lexTemplate = (start: number): number => {
    const tag = tagBefore(start);
    const literal: Literal = {
      start,
      end: start,
      line: lineAt(start),
      kind: "template",
      text: "",
      substitutions: [],
      tag,
    };
    literals.push(literal);
    let i = start + 1;
    while (i < src.length) {
      const c = src[i];
      if (c === "\\") {
        literal.text += src.slice(i, i + 2);
        blank(i, i + 2);
        i += 2;
      } else if (c === "`") {
        i++;
        break;
      } else if (c === "$" && src[i + 1] === "{") {
        literal.text += "${}";
        blank(i, i + 2);
        const end = lexCode(i + 2, true);
        blank(end - 1, end);
        literal.substitutions.push(src.slice(i + 2, end - 1));
        i = end;
      } else {
        literal.text += c;
        blank(i, i + 1);
        i++;
      }
    }
    literal.end = i;
    return i;
  };

  lexCode(0, false);
  return { code: code.join(""), literals };
}

/** A `+` right before or after a literal whose other operand is not a literal too. */
function joinedWithNonLiteral(lexed: Lexed, literal: Literal): boolean {
  const starts = new Set(lexed.literals.map((l) => l.start));
  const ends = new Set(lexed.literals.map((l) => l.end));
  let k = literal.end;
  while (k < lexed.code.length && /\s/.test(lexed.code[k])) k++;
  if (lexed.code[k] === "+" && lexed.code[k + 1] !== "+" && lexed.code[k + 1] !== "=") {
    k++;
    while (k < lexed.code.length && /\s/.test(lexed.code[k])) k++;
    if (!starts.has(k)) return true;
  }
  k = literal.start - 1;
  while (k >= 0 && /\s/.test(lexed.code[k])) k--;
  if (lexed.code[k] === "+" && lexed.code[k - 1] !== "+") {
    k--;
    while (k >= 0 && /\s/.test(lexed.code[k])) k--;
    if (!ends.has(k + 1)) return true;
  }
  return false;
}

interface Finding {
  file: string;
  line: number;
  what: string;
}

/** Every `.unsafe(…)` call: its argument text (from the source, between the parentheses). */
function unsafeCalls(src: string, lexed: Lexed): { line: number; argument: string }[] {
  const calls: { line: number; argument: string }[] = [];
  for (const match of lexed.code.matchAll(/\.unsafe\s*(?:<[^()]*?>)?\s*\(/g)) {
    const open = match.index! + match[0].length;
    let depth = 1;
    let k = open;
    for (; k < lexed.code.length && depth > 0; k++) {
      if (lexed.code[k] === "(") depth++;
      if (lexed.code[k] === ")") depth--;
    }
    calls.push({
      line: src.slice(0, match.index).split("\n").length,
      argument: src.slice(open, k - 1).trim(),
    });
  }
  return calls;
}

/**
 * Shopify documents built from counts alone: the batched read has one alias per listing, so its text
 * is made of numbered names (`l0`, `$item0`, `$location0`, …) and nothing else; every value travels
 * as a variable. Inside these functions a template may interpolate only those names.
 */
const COUNT_BUILT_DOCUMENTS = [{
  file: "src/channels/shopify/documents.ts",
  fn: "availableAtLocations",
  substitutions: /^(i|name|location|locations\.size|declared\.join\(", "\)|fields\.join\("\\n"\))$/,
}];

/** The lines of `fn`'s body in `src` (from its declaration to the first top-level closing brace). */
function functionLines(src: string, fn: string): [number, number] | undefined {
  const lines = src.split("\n");
  const start = lines.findIndex((l) => new RegExp(`^export function ${fn}\\(`).test(l));
  if (start < 0) return undefined;
  const end = lines.findIndex((l, i) => i > start && l === "}");
  return [start + 1, end + 1];
}

/** Whether `literal` is a count-built document's template interpolating only numbered names. */
function countBuilt(file: string, src: string, literal: { line: number; substitutions: string[] }): boolean {
  return COUNT_BUILT_DOCUMENTS.some((d) => {
    const range = d.file === file ? functionLines(src, d.fn) : undefined;
    return range !== undefined && literal.line >= range[0] && literal.line <= range[1] &&
      literal.substitutions.every((sub) => d.substitutions.test(sub.trim()));
  });
}

/** What the rules say about one file's source. */
export function checkSource(file: string, src: string): { findings: Finding[]; unsafe: string[] } {
  const lexed = lex(src);
  const findings: Finding[] = [];
  const shopify = file.startsWith("src/channels/shopify/");
  for (const literal of lexed.literals) {
    const text = literal.kind === "template" ? literal.text : literal.text.slice(1, -1);
    if (isSql(text)) {
      const tag = literal.tag.split(".").pop() ?? "";
      if (literal.kind === "template" && literal.substitutions.length > 0 && !SQL_TAGS.has(tag)) {
        findings.push({
          file,
          line: literal.line,
          what: `SQL template with \${…} not tagged by a postgres.js client (tag "${literal.tag}")`,
        });
      }
      if (!(literal.kind === "template" && SQL_TAGS.has(tag)) && joinedWithNonLiteral(lexed, literal)) {
        findings.push({ file, line: literal.line, what: "SQL text concatenated with + to a non-literal" });
      }
    }
    if (shopify && GRAPHQL_SHAPE.test(text)) {
      if (
        literal.kind === "template" && literal.substitutions.length > 0 && !countBuilt(file, src, literal)
      ) {
        findings.push({ file, line: literal.line, what: "GraphQL document built with ${…}" });
      }
      if (joinedWithNonLiteral(lexed, literal)) {
        findings.push({
          file,
          line: literal.line,
          what: "GraphQL document concatenated with + to a non-literal",
        });
      }
    }
  }
  const unsafe: string[] = [];
  for (const call of unsafeCalls(src, lexed)) {
    const allowed = UNSAFE_ALLOWLIST.find((a) => a.file === file && a.argument === call.argument);
    if (allowed) unsafe.push(`${file}:${call.line} .unsafe(${call.argument}) — ${allowed.reason}`);
    else findings.push({ file, line: call.line, what: `.unsafe(${call.argument}) is not on the allowlist` });
  }
  return { findings, unsafe };
}

async function sourceFiles(dir: URL, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${prefix}/${entry.name}`;
    if (entry.isDirectory) out.push(...await sourceFiles(new URL(`${entry.name}/`, dir), path));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

Deno.test("the lexer and the rules catch planted violations and pass their safe twins", () => {
  const planted = [
    ["src/x.ts", "const q = `select * from sale where id = ${id}`;", 1],
    ["src/x.ts", "await db.query(`delete from sale where sku = '${sku}'`);", 1],
    ["src/x.ts", 'const q = "select * from sale where sku = \'" + sku + "\'";', 1],
    ["src/x.ts", "const q = prefix + 'insert into sale values (1)';", 1],
    ["src/x.ts", "await sql.unsafe(`drop schema ${name} cascade`);", 2],
    ["src/x.ts", "await sql.unsafe(query);", 1],
    // A type argument does not hide the call.
    ["src/x.ts", "await sql.unsafe<{ n: number }[]>(query);", 1],
    [
      "src/channels/shopify/x.ts",
      'const d = `query { productVariants(query: "${sku}") { nodes { id } } }`;',
      1,
    ],
    ["src/channels/shopify/x.ts", 'const d = "mutation { a(id: \\"" + id + "\\") { b } }";', 1],
    // Safe twins: tagged templates, constants, regex and comments holding backticks or quotes.
    ["src/x.ts", "await tx<{ n: number }[]>`select count(*) from sale where id = ${id}`;", 0],
    ["src/x.ts", "const rows = await this.options.sql`update sale set x = ${x} where id = ${id}`;", 0],
    ["src/x.ts", 'const Q = "select stock from producto " +\n  "where id = $1";', 0],
    ["src/x.ts", "const m = `create table sale (id text);`; // `select ${x} from y`", 0],
    ["src/x.ts", "const re = /`select ${x} from y`/g; const s = `ok ${a / 2} / ${b}`;", 0],
    // Conservative: prose that reads like SQL and interpolates is flagged too.
    ["src/x.ts", "const msg = `could not update ${sku}: select a store from the list`;", 1],
    ["src/channels/shopify/x.ts", 'const q = `sku:"${escape(sku)}"`;', 0],
  ] as const;
  for (const [file, src, expected] of planted) {
    const { findings } = checkSource(file, src);
    assert.equal(findings.length, expected, `${src}\n→ ${JSON.stringify(findings)}`);
  }
  const lexed = lex("const a = `x ${`y ${z}`} w`; const b = 1 / 2; // `not a template ${q}`");
  assert.deepEqual(lexed.literals.map((l) => [l.text, l.substitutions]), [
    ["x ${} w", ["`y ${z}`"]],
    ["y ${}", ["z"]],
  ]);
});

Deno.test("no SQL or GraphQL in src/ is built by concatenating or interpolating input", async () => {
  const files = await sourceFiles(new URL("src/", ROOT), "src");
  assert.ok(files.length > 30, `${files.length} source files`);
  const findings: Finding[] = [];
  const unsafe: string[] = [];
  let sqlTemplates = 0;
  for (const file of files) {
    const src = await Deno.readTextFile(new URL(file, ROOT));
    // A lexing slip (a regex taken for division, say) would unbalance the blanked code: fail loudly instead.
    const { code } = lex(src);
    for (const [open, close] of [["{", "}"], ["(", ")"], ["[", "]"]]) {
      assert.equal(
        code.split(open).length,
        code.split(close).length,
        `${file}: lexer lost track of ${open}${close}`,
      );
    }
    const result = checkSource(file, src);
    findings.push(...result.findings);
    unsafe.push(...result.unsafe);
    sqlTemplates += lex(src).literals.filter((l) =>
      l.kind === "template" && SQL_TAGS.has(l.tag.split(".").pop() ?? "") && isSql(l.text)
    ).length;
  }
  assert.deepEqual(findings.map((f) => `${f.file}:${f.line}: ${f.what}`), []);
  // The allowlist is exact: an entry that matches nothing any more must go.
  for (const entry of UNSAFE_ALLOWLIST) {
    assert.ok(
      unsafe.some((u) => u.startsWith(entry.file)),
      `stale allowlist entry: ${JSON.stringify(entry)}`,
    );
  }
  assert.ok(sqlTemplates > 40, `the scan saw the postgres.js queries (${sqlTemplates})`);
  console.log(
    `query scan: ${files.length} files, ${sqlTemplates} tagged SQL templates, allowed .unsafe calls:\n  ${
      unsafe.join("\n  ")
    }`,
  );
});

Deno.test("Shopify documents are constants, valid GraphQL, and the only documents the channel sends", async () => {
  const file = "src/channels/shopify/documents.ts";
  const lexed = lex(await Deno.readTextFile(new URL(file, ROOT)));
  const templates = lexed.literals.filter((l) => l.kind === "template");
  assert.ok(templates.length >= 4);
  const source = await Deno.readTextFile(new URL(file, ROOT));
  for (const t of templates) {
    if (countBuilt(file, source, t)) continue;
    assert.deepEqual(t.substitutions, [], `${file}:${t.line} has \${…}`);
  }
  const names = new Set<string>();
  for (const [name, value] of Object.entries(documents)) {
    if (typeof value !== "string") continue;
    names.add(name);
    const doc = parse(value);
    const [operation] = doc.definitions;
    assert.ok(
      doc.definitions.length === 1 && operation.kind === "OperationDefinition",
      `${name}: one operation`,
    );
    assert.ok((operation.variableDefinitions ?? []).length > 0, `${name}: takes its input as variables`);
  }
  for (const [op, doc] of Object.entries(documents.SHOPIFY_DOCUMENTS)) {
    if (op === "AvailableAtLocations") {
      // Count-built (see COUNT_BUILT_DOCUMENTS): the entry is its two-listing example.
      const example = documents.availableAtLocations([
        { item: "gid://shopify/InventoryItem/1", location: "gid://shopify/Location/1" },
        { item: "gid://shopify/InventoryItem/2", location: "gid://shopify/Location/2" },
      ]);
      assert.equal(doc, example.query);
      assert.ok(
        !Object.values(example.variables).some((v) => example.query.includes(v)),
        "values are variables",
      );
      continue;
    }
    assert.ok(
      (Object.values(documents) as unknown[]).includes(doc),
      `${op} is one of the exported constants`,
    );
  }
  // Every call site passes one of those constants as the document, and the input as variables.
  const dir = new URL("src/channels/shopify/", ROOT);
  let calls = 0;
  for await (const entry of Deno.readDir(dir)) {
    const src = await Deno.readTextFile(new URL(entry.name, dir));
    for (const m of src.matchAll(/\.call<[^>]*>\(\s*("[^"]*"|\w+)\s*,\s*([\w$]+)\s*,/g)) {
      calls++;
      assert.ok(names.has(m[2]), `${entry.name}: .call(…) sends ${m[2]}, not a documents.ts constant`);
    }
  }
  assert.ok(calls >= 3, `found the call sites (${calls})`);
});
