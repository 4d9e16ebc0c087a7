/**
 * Packaging stays consistent with the code: .env.example, docker-compose.yml, the Dockerfile, the Kubernetes
 * manifests and the Prometheus rules name only variables and metrics the service really has, carry its real
 * defaults and permissions, and parse. Needs no services; promtool is required in CI.
 */
import assert from "node:assert/strict";
import { findPromtool } from "./helpers.ts";
import { parse, parseAllDocuments, stringify } from "yaml";
import { CONFIG_VARIABLES, loadConfig, parseDurationMs, SECRET_VARIABLES } from "../src/config.ts";
import { createMetrics } from "../src/metrics.ts";

// deno-lint-ignore no-explicit-any
type Doc = any; // parsed YAML; its shape is what the assertions check

const root = new URL("../", import.meta.url);
const path = (relative: string) => new URL(relative, root).pathname;
const read = (relative: string) => Deno.readTextFile(new URL(relative, root));
const KNOWN = new Set(CONFIG_VARIABLES);
/** Variables whose URL may carry a password: Secret material in Kubernetes. */
const URL_VARIABLES = ["RABBITMQ_URL", "DATABASE_URL", "REDIS_URL"];

function assertKnown(names: Iterable<string>, where: string) {
  const unknown = [...names].filter((name) => !KNOWN.has(name));
  assert.deepEqual(unknown, [], `${where} names variables the service does not read: ${unknown.join(", ")}`);
}

// --- .env.example ---------------------------------------------------------------------------------------

interface EnvEntry {
  name: string;
  value: string;
  commented: boolean;
  /** The comment lines right above the assignment. */
  doc: string[];
}

/** Assignments, commented out (`# NAME=value`) or not, each with the comment block above it. */
function parseEnvExample(text: string): EnvEntry[] {
  const entries: EnvEntry[] = [];
  let doc: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) {
      entries.push({ name: m[2], value: m[3], commented: m[1] !== undefined, doc });
      doc = [];
    } else if (line.startsWith("#")) doc.push(line);
    else doc = [];
  }
  return entries;
}

const envExample = parseEnvExample(await read(".env.example"));
/** The values .env.example gives, as an environment (empty ones count as unset anyway). */
const envExampleValues = Object.fromEntries(envExample.map((e) => [e.name, e.value]));

Deno.test(".env.example names every variable the service reads, once, and nothing else", () => {
  const names = envExample.map((e) => e.name);
  assertKnown(names, ".env.example");
  const missing = CONFIG_VARIABLES.filter((name) => !names.includes(name));
  assert.deepEqual(missing, [], `.env.example lacks ${missing.join(", ")}`);
  const repeated = names.filter((name, i) => names.indexOf(name) !== i);
  assert.deepEqual(repeated, [], `.env.example repeats ${repeated.join(", ")}`);
});

Deno.test(".env.example explains each variable with its default; secrets are empty and say so", () => {
  for (const entry of envExample) {
    const doc = entry.doc.join(" ");
    assert.match(doc, /default/i, `${entry.name}: the comment above it must give the default`);
    if (SECRET_VARIABLES.has(entry.name)) {
      assert.equal(entry.value, "", `${entry.name} is a secret: leave it empty in .env.example`);
      assert.match(doc, /secret/i, `${entry.name}: say it is a secret`);
    } else {
      assert.ok(
        entry.commented || entry.value === "",
        `${entry.name}: comment the line out (or leave it empty)`,
      );
    }
  }
});

Deno.test(".env.example's values are the service's defaults", () => {
  assert.deepEqual(loadConfig(envExampleValues), loadConfig({}));
});

// --- docker-compose.yml ---------------------------------------------------------------------------------

/** Compose accepts environment as a map or as a list of NAME=value. */
function composeEnvironment(environment: Doc): Record<string, string> {
  if (Array.isArray(environment)) {
    return Object.fromEntries(environment.map((item: string) => {
      const at = item.indexOf("=");
      return at < 0 ? [item, ""] : [item.slice(0, at), item.slice(at + 1)];
    }));
  }
  return Object.fromEntries(Object.entries(environment ?? {}).map(([k, v]) => [k, String(v ?? "")]));
}

const compose: Doc = parse(await read("docker-compose.yml"));

Deno.test("docker-compose.yml: RabbitMQ, Postgres and Redis with health checks", () => {
  const { rabbitmq, postgres, redis } = compose.services;
  assert.equal(rabbitmq?.image, "rabbitmq:3-management");
  assert.deepEqual(rabbitmq.healthcheck?.test, ["CMD", "rabbitmq-diagnostics", "-q", "ping"]);
  assert.equal(postgres?.image, "postgres:15");
  assert.match(JSON.stringify(postgres.healthcheck?.test), /pg_isready/);
  assert.equal(redis?.image, "redis:7");
  assert.deepEqual(redis.healthcheck?.test, ["CMD", "redis-cli", "ping"]);
});

Deno.test("docker-compose.yml: the worker waits for healthy services and reaches them by name", () => {
  const worker = compose.services.worker;
  assert.equal(worker.container_name, "blend_shopify_worker");
  assert.ok(worker.build, "the worker is built from the Dockerfile");
  for (const service of ["rabbitmq", "postgres", "redis"]) {
    assert.equal(worker.depends_on?.[service]?.condition, "service_healthy", `worker waits for ${service}`);
  }
  const envFiles = [worker.env_file ?? []].flat().map((f: Doc) => typeof f === "string" ? f : f.path);
  assert.ok(envFiles.includes(".env"), "the worker reads .env");
  const environment = composeEnvironment(worker.environment);
  assertKnown(Object.keys(environment), "docker-compose.yml (worker environment)");
  assert.equal(new URL(environment.RABBITMQ_URL).hostname, "rabbitmq");
  assert.equal(new URL(environment.REDIS_URL).hostname, "redis");
  const database = new URL(environment.DATABASE_URL);
  assert.equal(database.hostname, "postgres");
  assert.equal(
    decodeURIComponent(database.password),
    String(compose.services.postgres.environment?.POSTGRES_PASSWORD ?? ""),
    "DATABASE_URL carries the password the postgres service is given",
  );
  assert.ok(worker.healthcheck?.test, "the worker has a health check");
  assert.ok(
    (worker.ports ?? []).some((p: Doc) => String(p).endsWith(":8080")),
    "the worker publishes port 8080",
  );
});

Deno.test("docker-compose.yml: the worker's configuration loads and Docker waits out the graceful shutdown", () => {
  const worker = compose.services.worker;
  // .env as copied from .env.example, then the compose environment on top (compose's precedence).
  const config = loadConfig({ ...envExampleValues, ...composeEnvironment(worker.environment) });
  const grace = parseDurationMs(String(worker.stop_grace_period ?? "10s"));
  assert.ok(
    grace !== undefined && grace > config.SHUTDOWN_TIMEOUT,
    `stop_grace_period (${worker.stop_grace_period ?? "10s default"}) must exceed SHUTDOWN_TIMEOUT`,
  );
});

// --- Dockerfile -----------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}

/** Instructions with continuations joined and comments dropped (also inside continuations, as Docker does). */
function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    pending += (pending ? " " : "") + line.replace(/\\$/, "").trim();
    if (line.endsWith("\\")) continue;
    const at = pending.search(/\s/);
    out.push({ op: pending.slice(0, at).toUpperCase(), args: pending.slice(at + 1).trim() });
    pending = "";
  }
  return out;
}

/** Splits instructions into build stages (each starting at FROM); instructions before the first are [0]. */
function stages(instructions: Instruction[]): Instruction[][] {
  const result: Instruction[][] = [[]];
  for (const i of instructions) {
    if (i.op === "FROM") result.push([]);
    result.at(-1)!.push(i);
  }
  return result;
}

const dockerfile = dockerInstructions(await read("Dockerfile"));
const [preamble, build, ...rest] = stages(dockerfile);
const runtime = rest.at(-1) ?? [];
const args = (stage: Instruction[], op: string) => stage.filter((i) => i.op === op).map((i) => i.args);

Deno.test("Dockerfile installs the pinned Deno from npm, locks, type-checks, in a separate build stage", async () => {
  const pinned = (await read(".deno-version")).trim();
  assert.ok(
    args(preamble, "ARG").includes(`DENO_VERSION=${pinned}`),
    `ARG DENO_VERSION=${pinned} (.deno-version)`,
  );
  assert.ok(build && runtime.length > 0, "a build stage and a runtime stage");
  assert.notEqual(runtime[0].args, build[0].args, "the runtime stage is not the build image");
  const runs = args(build, "RUN").join("\n");
  assert.match(runs, /npm install -g [^\n]*"?deno@\$\{?DENO_VERSION\}?"?/);
  assert.match(runs, /deno install --frozen/);
  assert.match(runs, /deno check src\/main\.ts/);
  const copies = args(build, "COPY").join("\n");
  for (const source of ["deno.json deno.lock", "vendor/", "src/", "scripts/"]) {
    assert.ok(copies.includes(source), source);
  }
});

Deno.test("Dockerfile runtime: cache from the build stage, non-root, port, health check, signal", () => {
  const env = args(runtime, "ENV").join(" ");
  const denoDir = /\bDENO_DIR=(\S+)/.exec(env)?.[1];
  assert.ok(denoDir, "ENV DENO_DIR in the runtime stage");
  assert.ok(
    args(runtime, "COPY").some((c) => c.startsWith("--from=") && c.trim().endsWith(` ${denoDir}`)),
    `DENO_DIR (${denoDir}) is copied from the build stage`,
  );
  const user = args(runtime, "USER").at(-1);
  assert.ok(user && !/^(root|0)(:|$)/.test(user), `runs as a non-root user (USER ${user})`);
  assert.ok(args(runtime, "EXPOSE").some((e) => e.split(/\s+/).includes("8080")), "EXPOSE 8080");
  assert.deepEqual(args(runtime, "STOPSIGNAL"), ["SIGTERM"]);
  assert.match(args(runtime, "HEALTHCHECK").join(" "), /\/healthz/);
});

Deno.test("Dockerfile CMD runs src/main.ts with exactly the permissions of `deno task start`, from cache", async () => {
  const task: string[] = JSON.parse(await read("deno.json")).tasks.start.split(/\s+/);
  const cmd: string[] = JSON.parse(args(runtime, "CMD").at(-1) ?? "null");
  assert.ok(Array.isArray(cmd), "CMD in exec (JSON) form");
  assert.deepEqual(cmd.slice(0, 2), ["deno", "run"]);
  assert.equal(cmd.at(-1), task.at(-1), "the same entry point");
  const permissions = (tokens: string[]) => tokens.filter((t) => /^--(allow|deny)-/.test(t)).sort();
  assert.deepEqual(permissions(cmd), permissions(task));
  assert.ok(cmd.includes("--cached-only"), "start-up never fetches (--cached-only)");
});

Deno.test(".dockerignore keeps .env and .git out and lets in what the build copies", async () => {
  const rules = (await read(".dockerignore")).split("\n").map((l) => l.trim()).filter((l) =>
    l && !l.startsWith("#")
  );
  // Enough of Docker's matching for this file: "*", and literal paths (a trailing / names a directory).
  const ignored = (file: string) => {
    let result = false;
    for (const rule of rules) {
      const negated = rule.startsWith("!");
      const pattern = rule.replace(/^!/, "").replace(/\/$/, "");
      if (pattern === "*" || file === pattern || file.startsWith(pattern + "/")) result = !negated;
    }
    return result;
  };
  for (const file of [".env", ".git/config"]) assert.ok(ignored(file), `${file} is ignored`);
  const copied = args(build, "COPY").filter((c) => !c.startsWith("--from")).flatMap((c) =>
    c.split(/\s+/).slice(0, -1)
  );
  for (const file of copied) assert.ok(!ignored(file), `${file} (copied by the Dockerfile) is not ignored`);
});

// --- Kubernetes -----------------------------------------------------------------------------------------

async function kubernetesObjects(): Promise<Doc[]> {
  const objects: Doc[] = [];
  for await (const entry of Deno.readDir(path("deploy/k8s"))) {
    if (!/\.ya?ml$/.test(entry.name)) continue;
    for (const doc of parseAllDocuments(await read(`deploy/k8s/${entry.name}`))) {
      assert.deepEqual(doc.errors, [], `deploy/k8s/${entry.name} parses`);
      const object = doc.toJS();
      if (object === null) continue;
      assert.ok(
        object.apiVersion && object.kind && object.metadata?.name,
        `${entry.name}: a Kubernetes object`,
      );
      objects.push({ ...object, file: entry.name });
    }
  }
  return objects;
}

const k8s = await kubernetesObjects();
const one = (kind: string) => {
  const found = k8s.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind} in deploy/k8s`);
  return found[0];
};
const deployment = one("Deployment");
const configMap = one("ConfigMap");
const secret = one("Secret");
const podLabels = deployment.spec.template.metadata.labels;
const container = deployment.spec.template.spec.containers[0];
/** What a pod's environment holds: the ConfigMap's settings and the example Secret's keys. */
const clusterEnv: Record<string, string> = { ...configMap.data, ...secret.stringData };
const matches = (selector: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => podLabels[k] === v) && Object.keys(selector).length > 0;

Deno.test("k8s: configuration comes from the ConfigMap and the Secret, by names the service knows", () => {
  assert.equal(configMap.file, "configmap.yaml");
  assert.equal(secret.file, "secret.example.yaml");
  const data: Record<string, unknown> = configMap.data;
  assertKnown(Object.keys(data), "configmap.yaml");
  for (const [key, value] of Object.entries(data)) {
    assert.equal(typeof value, "string", `ConfigMap ${key}: Kubernetes requires string values (quote it)`);
  }
  const leaked = Object.keys(data).filter((key) => SECRET_VARIABLES.has(key) || URL_VARIABLES.includes(key));
  assert.deepEqual(leaked, [], `secrets in the ConfigMap: ${leaked.join(", ")}`);
  assert.equal(data.QUEUE_TYPE, "quorum", "quorum queues in production");
  assertKnown(Object.keys(secret.stringData ?? {}), "secret.example.yaml");

  const env: { name: string; valueFrom?: Doc }[] = container.env ?? [];
  assertKnown(env.map((e) => e.name), "deployment.yaml env");
  assert.equal(new Set(env.map((e) => e.name)).size, env.length, "no variable set twice");
  assert.ok(container.envFrom?.some((f: Doc) => f.configMapRef?.name === configMap.metadata.name));
  const fromSecret = new Map(
    env.filter((e) => e.valueFrom?.secretKeyRef).map((e) => [e.name, e.valueFrom.secretKeyRef]),
  );
  for (const name of [...SECRET_VARIABLES, ...URL_VARIABLES]) {
    const ref = fromSecret.get(name);
    assert.ok(ref, `${name} comes from a secretKeyRef`);
    assert.equal(ref.name, secret.metadata.name, `${name}: from the Secret in secret.example.yaml`);
    assert.equal(ref.key, name);
    assert.ok(name in secret.stringData, `secret.example.yaml shows ${name}`);
  }
  for (const name of [...URL_VARIABLES, "SHOPIFY_TOKEN"]) {
    assert.ok(
      !fromSecret.get(name)?.optional,
      `${name} is required: without it the service runs on defaults`,
    );
  }
});

Deno.test("k8s: the example Secret is clearly an example, and ConfigMap + Secret load", async () => {
  assert.match(await read("deploy/k8s/secret.example.yaml"), /EXAMPLE/);
  for (const [key, value] of Object.entries(secret.stringData)) {
    assert.ok(value === "" || String(value).includes("CHANGE-ME"), `${key}: a placeholder, not a real value`);
  }
  const config = loadConfig(clusterEnv);
  assert.equal(config.QUEUE_TYPE, "quorum");
  assert.ok(config.SHOPIFY_URL && config.SHOPIFY_TOKEN, "the real Shopify, never the sandbox, in a cluster");
  assert.ok(config.MELI_CLIENT_ID && config.MELI_REFRESH_TOKEN, "the real MercadoLibre, never the sandbox");
  assert.ok(config.MELI_TIENDA_ID, "mirror mode names the store MercadoLibre shows");
});

Deno.test("k8s Deployment: replicas, probes, resources, grace period, scraping, non-root", () => {
  const pod = deployment.spec.template.spec;
  assert.equal(deployment.spec.replicas, 3);
  assert.ok(matches(deployment.spec.selector.matchLabels), "the selector matches the pod labels");
  const port = container.ports.find((p: Doc) => p.containerPort === 8080);
  assert.ok(port, "container port 8080");
  const probe = (name: string, pathname: string) => {
    const get = container[name]?.httpGet;
    assert.equal(get?.path, pathname, `${name} on ${pathname}`);
    assert.ok(get.port === 8080 || get.port === port.name, `${name} on the HTTP port`);
  };
  probe("livenessProbe", "/healthz");
  probe("readinessProbe", "/readyz");
  assert.deepEqual(container.resources, {
    // Measured, not the 64Mi/128Mi: idle RSS is ~129 MiB, ~185 MiB with the launcher (deployment.yaml).
    requests: { memory: "200Mi", cpu: "100m" },
    limits: { memory: "320Mi", cpu: "200m" },
  });
  const shutdown = loadConfig(clusterEnv).SHUTDOWN_TIMEOUT;
  assert.ok(
    pod.terminationGracePeriodSeconds * 1000 > shutdown,
    `terminationGracePeriodSeconds (${pod.terminationGracePeriodSeconds}) must exceed SHUTDOWN_TIMEOUT`,
  );
  const annotations = deployment.spec.template.metadata.annotations;
  assert.equal(annotations["prometheus.io/scrape"], "true");
  assert.equal(annotations["prometheus.io/port"], "8080");
  assert.equal(annotations["prometheus.io/path"], "/metrics");
  assert.ok(pod.securityContext?.runAsNonRoot || container.securityContext?.runAsNonRoot, "runAsNonRoot");
});

Deno.test("k8s: HPA, PodDisruptionBudget and Service point at the Deployment's pods", () => {
  const hpa = one("HorizontalPodAutoscaler");
  assert.equal(hpa.apiVersion, "autoscaling/v2");
  assert.deepEqual(hpa.spec.scaleTargetRef, {
    apiVersion: "apps/v1",
    kind: "Deployment",
    name: deployment.metadata.name,
  });
  assert.equal(hpa.spec.minReplicas, 3);
  assert.equal(hpa.spec.maxReplicas, 20);
  assert.deepEqual(hpa.spec.metrics, [{
    type: "Resource",
    resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } },
  }]);
  const pdb = one("PodDisruptionBudget");
  assert.equal(pdb.apiVersion, "policy/v1");
  assert.ok(matches(pdb.spec.selector.matchLabels), "the PDB selects the pods");
  const service = one("Service");
  assert.ok(matches(service.spec.selector), "the Service selects the pods");
  const ports = container.ports.flatMap((p: Doc) => [p.name, p.containerPort]);
  assert.ok(service.spec.ports.some((p: Doc) => ports.includes(p.targetPort)), "a Service port targets 8080");
});

// --- Prometheus rules -----------------------------------------------------------------------------------

const alertsFile = path("deploy/prometheus/alerts.yml");
const rules: Doc[] = parse(await read("deploy/prometheus/alerts.yml")).groups.flatMap((g: Doc) => g.rules);

const promtool = await findPromtool();
const skipPromtool = !promtool && !Deno.env.get("CI");
if (skipPromtool) {
  console.warn("deploy_test: promtool not found (apt-get install prometheus); skipping its checks");
}

async function runPromtool(...promtoolArgs: string[]) {
  if (!promtool) throw new Error("promtool is required in CI (apt-get install prometheus)");
  const { success, stdout, stderr } = await new Deno.Command(promtool, { args: promtoolArgs }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.ok(success, `promtool ${promtoolArgs.join(" ")} failed:\n${text}`);
}

Deno.test("alerts use only metrics and labels the service exports", () => {
  const metrics = createMetrics("marketplace_sync_", () => Promise.resolve([]));
  const labels = new Map(
    metrics.registry.getMetricsAsArray().map((
      m,
    ) => [m.name, (m as unknown as { labelNames: string[] }).labelNames]),
  );
  for (const rule of rules) {
    for (const [, name, selector] of rule.expr.matchAll(/\b(marketplace_sync_\w+)(?:\{([^}]*)\})?/g)) {
      const base = name.replace(/_(bucket|sum|count)$/, "");
      assert.ok(labels.has(name) || labels.has(base), `${rule.alert}: the service exports no ${name}`);
      for (const [, label] of (selector ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
        assert.ok(
          [...(labels.get(name) ?? labels.get(base)!), "job", "instance"].includes(label),
          `${rule.alert}: ${name} has no label ${label}`,
        );
      }
    }
  }
});

Deno.test("every alert waits (for), has a severity and tells where to look", () => {
  const names = rules.map((r) => r.alert);
  for (
    const expected of [
      "MarketplaceSyncConsumerNotAttached",
      "MarketplaceSyncDependencyDown",
      "MarketplaceSyncDeadLetters",
      "MarketplaceSyncChangesFailed",
      "MarketplaceSyncBacklogGrowing",
      "MarketplaceSyncBacklogStalled",
      "MarketplaceSyncThrottled",
      "MarketplaceSyncDeadLetterCopyFailed",
      "MarketplaceSyncQueueBacklog",
      "MarketplaceSyncDeadLetterQueueNotEmpty",
      "MarketplaceSyncMercadoLibreReauthorize",
      "MarketplaceSyncTokenExpiring",
    ]
  ) assert.ok(names.includes(expected), `alert ${expected}`);
  for (const rule of rules) {
    assert.ok(rule.alert, "only alerting rules");
    assert.ok(rule.for && parseDurationMs(rule.for)! > 0, `${rule.alert}: a for duration`);
    assert.ok(["critical", "warning", "info"].includes(rule.labels?.severity), `${rule.alert}: severity`);
    const { summary, description, runbook } = rule.annotations ?? {};
    assert.ok(summary && description && runbook, `${rule.alert}: summary, description and runbook`);
    assert.match(
      runbook,
      /\/readyz|\/metrics|marketplace_sync_/,
      `${rule.alert}: runbook names an endpoint/metric`,
    );
  }
});

Deno.test({
  name: "promtool check rules accepts deploy/prometheus/alerts.yml",
  ignore: skipPromtool,
  fn: () => runPromtool("check", "rules", alertsFile),
});

/** Synthetic series (promtool's notation: a+bxN counts up, _ is a missing sample) and the alerts they fire. */
const ALERT_TESTS = [
  {
    name: "consumer down, or never attached",
    series: {
      'marketplace_sync_component_up{component="consumer", job="ms", instance="a"}': "0x10",
      'marketplace_sync_process_resident_memory_bytes{job="ms", instance="b"}': "1e8x10",
      'marketplace_sync_component_up{component="consumer", job="ms", instance="c"}': "1x10",
      'marketplace_sync_process_resident_memory_bytes{job="ms", instance="c"}': "1e8x10",
    },
    alerts: [
      { at: "1m", alert: "MarketplaceSyncConsumerNotAttached", labels: [] },
      {
        at: "5m",
        alert: "MarketplaceSyncConsumerNotAttached",
        labels: [{ component: "consumer", job: "ms", instance: "a" }, { job: "ms", instance: "b" }],
      },
    ],
  },
  {
    name: "dependency down",
    series: {
      'marketplace_sync_component_up{component="redis", job="ms", instance="a"}': "0x10",
      'marketplace_sync_component_up{component="postgres", job="ms", instance="a"}': "1x10",
    },
    alerts: [{
      at: "5m",
      alert: "MarketplaceSyncDependencyDown",
      labels: [{ component: "redis", job: "ms", instance: "a" }],
    }],
  },
  {
    name: "a dead-letter counter that appears at 1, then nothing more",
    series: {
      'marketplace_sync_events_dead_lettered_total{reason="invalid_json", job="ms", instance="a"}':
        "_x5 1x30",
    },
    alerts: [
      { at: "10m", alert: "MarketplaceSyncDeadLetters", labels: [{ reason: "invalid_json" }] },
      { at: "30m", alert: "MarketplaceSyncDeadLetters", labels: [] },
    ],
  },
  {
    name: "failed changes reported by every replica alert once per channel",
    series: Object.fromEntries(
      ["a", "b", "c"].map((i) => [
        `marketplace_sync_ledger_changes{channel="shopify", status="failed", job="ms", instance="${i}"}`,
        "2x10",
      ]),
    ),
    alerts: [{ at: "10m", alert: "MarketplaceSyncChangesFailed", labels: [{ channel: "shopify" }] }],
  },
  {
    name: "pending grows with nothing applied; MercadoLibre's pending is expected",
    series: {
      'marketplace_sync_ledger_changes{channel="shopify", status="pending", job="ms", instance="a"}':
        "1000+50x60",
      'marketplace_sync_ledger_changes{channel="mercadolibre", status="pending", job="ms", instance="a"}':
        "1000+50x60",
    },
    alerts: [
      { at: "40m", alert: "MarketplaceSyncBacklogGrowing", labels: [{ channel: "shopify" }] },
      { at: "40m", alert: "MarketplaceSyncBacklogStalled", labels: [{ channel: "shopify" }] },
    ],
  },
  {
    name: "pending but applying: not stalled",
    series: {
      'marketplace_sync_ledger_changes{channel="shopify", status="pending", job="ms", instance="a"}': "10x40",
      'marketplace_sync_changes_processed_total{channel="shopify", outcome="applied", job="ms", instance="a"}':
        "0+5x40",
    },
    alerts: [{ at: "30m", alert: "MarketplaceSyncBacklogStalled", labels: [] }],
  },
  {
    name: "throttled, unauthorized, dead-letter copy failures",
    series: {
      'marketplace_sync_marketplace_calls_total{channel="shopify", operation="adjust", outcome="throttled", job="ms", instance="a"}':
        "0+3x30",
      'marketplace_sync_marketplace_calls_total{channel="shopify", operation="adjust", outcome="http_401", job="ms", instance="a"}':
        "0+1x30",
      'marketplace_sync_dead_letter_copy_failures_total{channel="shopify", job="ms", instance="a"}':
        "_x3 1x30",
    },
    alerts: [
      { at: "20m", alert: "MarketplaceSyncThrottled", labels: [{ channel: "shopify" }] },
      { at: "20m", alert: "MarketplaceSyncMarketplaceUnauthorized", labels: [{ channel: "shopify" }] },
      { at: "8m", alert: "MarketplaceSyncDeadLetterCopyFailed", labels: [{ channel: "shopify" }] },
    ],
  },
  {
    name: "queue backlog and a DLQ that nobody empties",
    series: {
      'marketplace_sync_queue_messages{queue="marketplace-sync.sales.created", job="ms", instance="a"}':
        "100+500x30",
      'marketplace_sync_queue_messages{queue="marketplace-sync.sales.created.dlq", job="ms", instance="a"}':
        "0x5 3x90",
    },
    alerts: [
      { at: "5m", alert: "MarketplaceSyncQueueBacklog", labels: [] },
      {
        at: "25m",
        alert: "MarketplaceSyncQueueBacklog",
        labels: [{ queue: "marketplace-sync.sales.created" }],
      },
      { at: "30m", alert: "MarketplaceSyncDeadLetterQueueNotEmpty", labels: [] },
      {
        at: "70m",
        alert: "MarketplaceSyncDeadLetterQueueNotEmpty",
        labels: [{ queue: "marketplace-sync.sales.created.dlq" }],
      },
    ],
  },
  {
    name: "MercadoLibre token: invalid_grant, and a token left to expire",
    series: {
      'marketplace_sync_oauth_refreshes_total{channel="mercadolibre", outcome="invalid_grant", job="ms", instance="a"}':
        "0x5 1x20",
      'marketplace_sync_oauth_token_expiry_seconds{channel="mercadolibre", job="ms", instance="a"}':
        "3000-100x40",
    },
    alerts: [
      { at: "3m", alert: "MarketplaceSyncMercadoLibreReauthorize", labels: [] },
      {
        at: "8m",
        alert: "MarketplaceSyncMercadoLibreReauthorize",
        labels: [{ channel: "mercadolibre" }],
      },
      { at: "30m", alert: "MarketplaceSyncTokenExpiring", labels: [] },
      { at: "40m", alert: "MarketplaceSyncTokenExpiring", labels: [{ channel: "mercadolibre" }] },
    ],
  },
];

Deno.test({
  name: "promtool test rules: the alerts fire on the situations they describe, and only then",
  ignore: skipPromtool,
  fn: async () => {
    const severity = new Map(rules.map((r) => [r.alert, r.labels.severity]));
    // promtool compares annotations too; the tests are about expressions, so they run on a copy without them.
    const bare = parse(await read("deploy/prometheus/alerts.yml"));
    for (const group of bare.groups) for (const rule of group.rules) delete rule.annotations;
    const unitTests = {
      rule_files: ["alerts.yml"], // next to the test file, where promtool looks
      evaluation_interval: "1m",
      tests: ALERT_TESTS.map((t) => ({
        name: t.name,
        interval: "1m",
        input_series: Object.entries(t.series).map(([series, values]) => ({ series, values })),
        alert_rule_test: t.alerts.map((a) => ({
          eval_time: a.at,
          alertname: a.alert,
          exp_alerts: a.labels.map((labels) => ({
            exp_labels: { ...labels, severity: severity.get(a.alert) },
          })),
        })),
      })),
    };
    const dir = await Deno.makeTempDir({ prefix: "alerts_test_" });
    try {
      await Deno.writeTextFile(`${dir}/alerts.yml`, stringify(bare));
      await Deno.writeTextFile(`${dir}/alerts_test.yml`, stringify(unitTests));
      await runPromtool("test", "rules", `${dir}/alerts_test.yml`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
