// Shared by the client checks (openai_sdk.cjs, ai_sdk.cjs, langchain.cjs):
// arguments, the scenarios' fixtures and the one JSON line each prints.
//
//   node SCRIPT BASE_URL API_KEY [--model=NAME] [--only=SCENARIO,...]
//
// BASE_URL is an OpenAI base URL (`http://host:port/v1`); the model defaults
// to "mock-model". Every scenario runs (or the listed ones); the script prints
// {"library","version","ok","scenarios":{name:{"ok",...what it saw}}} on one
// line and exits 1 when a scenario saw anything unexpected. The expectations
// are those of tools/mock-llm behind the URL (directly or through Parley).
'use strict';

function args() {
  const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const option = (name) => {
    const hit = process.argv.slice(2).find((a) => a.startsWith(`--${name}=`));
    return hit ? hit.slice(name.length + 3) : null;
  };
  const [baseURL, apiKey] = positional;
  if (!baseURL || !apiKey) {
    console.error('usage: node SCRIPT BASE_URL API_KEY [--model=NAME] [--only=SCENARIO,...]');
    process.exit(2);
  }
  const only = option('only');
  return {
    baseURL,
    apiKey,
    model: option('model') || 'mock-model',
    only: only ? new Set(only.split(',')) : null,
  };
}

/// Throws with `what` unless `cond` holds.
function expect(cond, what) {
  if (!cond) throw new Error(`unexpected: ${what}`);
}

/// Usage with positive counts that add up ({prompt, completion, total}).
function expectUsage(u, what) {
  expect(u && u.prompt > 0 && u.completion > 0 && u.total === u.prompt + u.completion,
    `${what}: usage ${JSON.stringify(u)}`);
}

/// A key of Parley's shape that no user has.
const badKey = 'pk_0000000000000000000000000000000000000000';

/// The tool of the round trips, and what it answers.
const weatherTool = {
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string', description: 'the city' } },
    required: ['city'],
    additionalProperties: false,
  },
};
const weatherCity = 'Paris';
function weather(city) {
  return `sunny in ${city}, 21 C`;
}

/// A conversation of about `bytes` bytes of content: alternating user and
/// assistant turns of 1 KiB, ending with a user message `last`.
function longHistory(bytes, last) {
  const messages = [{ role: 'system', content: 'You remember everything.' }];
  const filler = 'lorem ipsum dolor sit amet '.repeat(40).slice(0, 1000);
  for (let i = 0, size = 0; size < bytes; i += 1) {
    const content = `turn ${i}: ${filler}`;
    messages.push({ role: i % 2 === 0 ? 'user' : 'assistant', content });
    size += content.length;
  }
  if (messages[messages.length - 1].role === 'user') {
    messages.push({ role: 'assistant', content: 'noted' });
  }
  messages.push({ role: 'user', content: last });
  return messages;
}

function errorText(e) {
  if (!e) return String(e);
  const parts = [e.constructor && e.constructor.name, e.message];
  if (e.status || e.statusCode) parts.push(`status ${e.status || e.statusCode}`);
  if (e.cause && e.cause.message) parts.push(`cause: ${e.cause.message}`);
  return parts.filter(Boolean).join(': ').slice(0, 600);
}

/// Runs the named scenarios (an object of async functions returning what
/// they saw), prints the JSON line and exits. A scenario gets
/// `scenarioMs` (a stream that stalls fails, rather than hanging the run);
/// once `runMs` passed the rest are reported as not run.
async function run(library, version, scenarios, { scenarioMs = 20000, runMs = 120000 } = {}) {
  const { only } = args();
  const out = { library, version, ok: true, scenarios: {} };
  const began = Date.now();
  for (const [name, fn] of Object.entries(scenarios)) {
    if (only && !only.has(name)) continue;
    const started = Date.now();
    if (started - began > runMs) {
      out.ok = false;
      out.scenarios[name] = { ok: false, ms: 0, error: `not run: the run took over ${runMs} ms` };
      continue;
    }
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${scenarioMs} ms`)), scenarioMs);
    });
    try {
      const saw = await Promise.race([fn(), timeout]);
      out.scenarios[name] = { ok: true, ms: Date.now() - started, ...saw };
    } catch (e) {
      out.ok = false;
      out.scenarios[name] = { ok: false, ms: Date.now() - started, error: errorText(e) };
    } finally {
      clearTimeout(timer);
    }
  }
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

function versionOf(pkg) {
  try {
    return require(`${pkg}/package.json`).version;
  } catch {
    // Packages whose exports hide package.json: find it beside the entry point.
    const path = require('path');
    const fs = require('fs');
    let dir = path.dirname(require.resolve(pkg));
    for (let i = 0; i < 5; i += 1, dir = path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (fs.existsSync(file)) {
        const p = JSON.parse(fs.readFileSync(file, 'utf8'));
        if (p.name === pkg) return p.version;
      }
    }
    return 'unknown';
  }
}

module.exports = {
  args, expect, expectUsage, badKey, weatherTool, weatherCity, weather, longHistory, run, versionOf,
};
