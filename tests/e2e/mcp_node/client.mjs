// The official TypeScript MCP SDK as a second, independent client of Interlock's /mcp
// (issue 19), run by tests/e2e/test_mcp_typescript.py. Streamable HTTP, a Bearer token.
//
//   INTERLOCK_URL=http://127.0.0.1:8080 INTERLOCK_TOKEN=… node client.mjs [--sdk v1|v2] run [--replicas N]
//       lists the tools, reads (`list` deployments in shop), asks for a write (`scale` web in
//       shop to N, default 5); prints one JSON document with what it got.
//   INTERLOCK_URL=… INTERLOCK_TOKEN=… node client.mjs [--sdk v1|v2] status <approval_id> [wait_s]
//       calls interlock_approval_status (with a progress token) and prints the result.
//
// --sdk v1 (the default): `@modelcontextprotocol/sdk` 1.x, the 2025 revisions (initialize).
// --sdk v2: `@modelcontextprotocol/client` 2.x pinned to revision 2026-07-28 (server/discover,
// no initialize; it fails rather than fall back to a 2025 revision).
// The URL and token may also be given as --url/--token (the environment keeps the token out of
// the process list). The last line on stdout is one JSON document; a failure is {"error": …}
// with exit code 1.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const MODERN = "2026-07-28";
const SDKS = {
  v1: {
    package: "@modelcontextprotocol/sdk",
    client: "@modelcontextprotocol/sdk/client/index.js",
    transport: "@modelcontextprotocol/sdk/client/streamableHttp.js",
  },
  v2: {
    package: "@modelcontextprotocol/client",
    client: "@modelcontextprotocol/client",
    transport: "@modelcontextprotocol/client",
  },
};

// The version installed (package-lock.json pins it): the package.json above the module imported
// (a package's exports map hides its own package.json).
function installedVersion(name, module) {
  let dir = dirname(fileURLToPath(import.meta.resolve(module)));
  for (; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      if (pkg.name === name) return pkg.version;
    } catch {
      // no package.json here (or a {"type": …} stub without a name): one level up
    }
  }
  throw new Error(`${name} is not installed`);
}

function options(argv) {
  const out = { sdk: "v1", replicas: "5", positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (["--url", "--token", "--sdk", "--replicas"].includes(argv[i])) out[argv[i].slice(2)] = argv[++i];
    else out.positional.push(argv[i]);
  }
  out.url ??= process.env.INTERLOCK_URL;
  out.token ??= process.env.INTERLOCK_TOKEN;
  if (!out.url || !out.token) throw new Error("give INTERLOCK_URL and INTERLOCK_TOKEN (or --url/--token)");
  if (!(out.sdk in SDKS)) throw new Error(`--sdk is v1 or v2, not ${out.sdk}`);
  return out;
}

async function connect(sdk, url, token) {
  const spec = SDKS[sdk];
  const version = installedVersion(spec.package, spec.client);
  const { Client } = await import(spec.client);
  const { StreamableHTTPClientTransport } = await import(spec.transport);
  const transport = new StreamableHTTPClientTransport(new URL("/mcp", url), {
    // A 2025 client names itself to a stateless server only by its User-Agent (its initialize
    // is a request of its own); 2026-07-28 names it in every request's _meta as well.
    requestInit: {
      headers: {
        Authorization: `Bearer ${token}`,
        "User-Agent": `interlock-e2e-typescript-${sdk}/${version}`,
      },
    },
  });
  const client = new Client(
    { name: `interlock-e2e-typescript-${sdk}`, version },
    sdk === "v2" ? { versionNegotiation: { mode: { pin: MODERN } } } : {},
  );
  await client.connect(transport);
  const about = () => ({
    sdk: { package: spec.package, version },
    node: process.version,
    protocol_version: client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion ?? null,
    protocol_era: client.getProtocolEra?.() ?? null,
    mcp_session_id: transport.sessionId ?? null,
    server: client.getServerVersion() ?? null,
  });
  // 1.x: callTool(params, resultSchema, options); 2.x: callTool(params, options).
  const callTool = (params, opts) =>
    sdk === "v2" ? client.callTool(params, opts) : client.callTool(params, undefined, opts);
  return { client, about, callTool };
}

function result(r) {
  return {
    isError: r.isError ?? false,
    structuredContent: r.structuredContent ?? null,
    text: (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text),
  };
}

async function run({ client, callTool }, replicas) {
  const listed = await client.listTools();
  const tools = listed.tools.map((t) => ({
    name: t.name,
    annotations: t.annotations ?? null,
    inputSchema: t.inputSchema,
  }));
  const read = await callTool({
    name: "list",
    arguments: { kind: "deployment", namespace: "shop" },
  });
  const write = await callTool({
    name: "scale",
    arguments: {
      kind: "deployment", name: "web", namespace: "shop", replicas,
      rationale: "More replicas for the evening peak.",
      expected_outcome: `web runs ${replicas} replicas.`,
    },
  });
  return { tools, read: result(read), write: result(write) };
}

async function status({ callTool }, approvalId, wait) {
  const progress = [];
  const r = await callTool(
    { name: "interlock_approval_status", arguments: { approval_id: approvalId, wait_seconds: wait } },
    {
      // The server holds the call open up to wait_seconds; the SDKs' default timeout is 60 s.
      timeout: (wait + 30) * 1000,
      onprogress: (p) => progress.push(p),
    },
  );
  return { status: result(r), progress };
}

async function main() {
  const opts = options(process.argv.slice(2));
  const [mode = "run", ...rest] = opts.positional;
  const conn = await connect(opts.sdk, opts.url, opts.token);
  try {
    let got;
    if (mode === "run") got = await run(conn, Number(opts.replicas));
    else if (mode === "status") got = await status(conn, rest[0], Number(rest[1] ?? 0));
    else throw new Error(`unknown mode ${mode}: run | status <approval_id> [wait_seconds]`);
    process.stdout.write(JSON.stringify({ ...conn.about(), mode, ...got }) + "\n");
  } finally {
    await conn.client.close();
  }
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + "\n");
  process.exitCode = 1;
});
