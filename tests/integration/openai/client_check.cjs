// Drives a running Parley node with the official `openai` npm package (major 7,
// pinned in package.json beside this file):
//   node client_check.cjs BASE_URL API_KEY
// Prints one JSON line with what it saw; exits non-zero on an unexpected error.
const OpenAI = require('openai');

async function main() {
  const [, , baseURL, apiKey] = process.argv;
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  const plain = await client.chat.completions.create({
    model: ids[0],
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello from openai' }],
    temperature: 0.2,
  });
  const stream = await client.chat.completions.create({
    model: ids[0],
    messages: [{ role: 'user', content: 'stream this please' }],
    stream: true,
  });
  let streamed = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices[0] || {};
    streamed += (choice.delta && choice.delta.content) || '';
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  let errStatus = 0;
  let errCode = '';
  try {
    const wrong = new OpenAI({ baseURL, apiKey: 'pk_0000000000000000000000000000000000000000', maxRetries: 0 });
    await wrong.chat.completions.create({ model: ids[0], messages: [{ role: 'user', content: 'x' }] });
  } catch (e) {
    errStatus = e.status;
    errCode = e.code;
  }
  console.log(JSON.stringify({
    ids,
    object: plain.object,
    text: plain.choices[0].message.content,
    finishPlain: plain.choices[0].finish_reason,
    streamed,
    chunks,
    finish,
    errStatus,
    errCode,
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
