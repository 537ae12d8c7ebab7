// The official `openai` SDK (major 7) against Parley's stateful OpenAI API
// (API.md section 5a: Conversations), across the nodes of a cluster:
//   node stateful_sdk.cjs BASE_URL API_KEY OTHER_KEY --nodes=URL,URL [--only=SCENARIO,...]
// BASE_URL and every --nodes URL are `http://host:port/v1` of nodes of one
// cluster; OTHER_KEY belongs to another user. Each scenario spreads its
// calls over the nodes in turn.
// Scenarios: conversations (create with items and metadata, retrieve,
// update, delete, then 404), paging (items both ways, the SDK following
// `last_id`/`has_more`, explicit `after`), isolation (another user's ids and
// unknown ids: NotFoundError, 404 in OpenAI's error shape).
// See common.cjs for the output.
'use strict';
const OpenAI = require('openai');
const c = require('./common.cjs');

const { baseURL, apiKey } = c.args();
const otherKey = process.argv.slice(2).filter((a) => !a.startsWith('--'))[2];
const nodesOption = process.argv.slice(2).find((a) => a.startsWith('--nodes='));
const urls = [baseURL, ...(nodesOption ? nodesOption.slice(8).split(',').filter(Boolean) : [])];
const clients = urls.map((u) => new OpenAI({ baseURL: u, apiKey, maxRetries: 0, timeout: 30000 }));
const others = urls.map((u) => new OpenAI({ baseURL: u, apiKey: otherKey, maxRetries: 0, timeout: 30000 }));
let turn = 0;
/// The next node's client (round robin over the cluster).
function next() {
  turn += 1;
  return clients[turn % clients.length];
}

function textOf(item) {
  return (item.content || []).map((p) => p.text).join('');
}

async function expectNotFound(fn, what) {
  try {
    await fn();
  } catch (e) {
    c.expect(e instanceof OpenAI.NotFoundError, `${what}: ${e.constructor.name}: ${e.message}`);
    c.expect(e.status === 404 && e.error && e.error.code === 'not_found' &&
      typeof e.error.message === 'string' && typeof e.error.type === 'string',
    `${what}: error ${JSON.stringify(e.error)}`);
    return e.status;
  }
  throw new Error(`unexpected: ${what} succeeded`);
}

/// Every item of a conversation through the SDK's auto-pagination.
async function allItems(client, id, query) {
  const out = [];
  for await (const item of client.conversations.items.list(id, query)) out.push(item);
  return out;
}

c.run('openai', c.versionOf('openai'), {
  async conversations() {
    const conv = await next().conversations.create({
      metadata: { topic: 'demo' },
      items: [
        { type: 'message', role: 'user', content: 'hello there' },
        { role: 'assistant', content: [{ type: 'output_text', text: 'hi!' }] },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'part one, ' },
          { type: 'input_text', text: 'part two' }] },
      ],
    });
    c.expect(/^conv_[0-9a-f]+$/.test(conv.id) && conv.object === 'conversation',
      `created ${JSON.stringify(conv)}`);
    c.expect(Number.isInteger(conv.created_at) &&
      Math.abs(conv.created_at - Date.now() / 1000) < 300, `created_at ${conv.created_at}`);
    c.expect(conv.metadata.topic === 'demo', `metadata ${JSON.stringify(conv.metadata)}`);
    const got = await next().conversations.retrieve(conv.id);
    c.expect(got.id === conv.id && got.created_at === conv.created_at &&
      got.metadata.topic === 'demo', `retrieved ${JSON.stringify(got)}`);
    const updated = await next().conversations.update(conv.id, { metadata: { topic: 'changed', n: '2' } });
    c.expect(updated.metadata.topic === 'changed' && updated.metadata.n === '2',
      `updated ${JSON.stringify(updated)}`);
    const again = await next().conversations.retrieve(conv.id);
    c.expect(again.metadata.topic === 'changed', `after update ${JSON.stringify(again)}`);
    const items = await allItems(next(), conv.id, { order: 'asc' });
    c.expect(items.length === 3, `items ${JSON.stringify(items)}`);
    c.expect(items.map((i) => i.role).join() === 'user,assistant,user', `roles ${JSON.stringify(items)}`);
    c.expect(textOf(items[0]) === 'hello there' && textOf(items[2]) === 'part one, part two',
      `texts ${JSON.stringify(items)}`);
    c.expect(items[0].type === 'message' && items[0].status === 'completed' &&
      items[0].content[0].type === 'input_text' && items[1].content[0].type === 'output_text',
    `shapes ${JSON.stringify(items)}`);
    const added = await next().conversations.items.create(conv.id, {
      items: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'noted' }] },
        { role: 'user', content: 'and more' }],
    });
    c.expect(added.data.length === 2 && textOf(added.data[0]) === 'noted' &&
      textOf(added.data[1]) === 'and more', `added ${JSON.stringify(added)}`);
    const latest = await next().conversations.items.list(conv.id, { limit: 1 });
    c.expect(latest.data[0].id === added.data[1].id && latest.has_more === true,
      `latest ${JSON.stringify(latest.data)}`);
    const deleted = await next().conversations.delete(conv.id);
    c.expect(deleted.id === conv.id && deleted.deleted === true &&
      deleted.object === 'conversation.deleted', `deleted ${JSON.stringify(deleted)}`);
    for (const client of clients) {
      await expectNotFound(() => client.conversations.retrieve(conv.id), 'retrieve after delete');
      await expectNotFound(() => client.conversations.items.list(conv.id), 'items after delete');
    }
    await expectNotFound(() => next().conversations.delete(conv.id), 'delete twice');
    return { id: conv.id, items: items.length, added: added.data.length };
  },
  async paging() {
    const texts = Array.from({ length: 7 }, (_, i) => `message ${i + 1}`);
    const conv = await next().conversations.create({
      items: texts.map((t, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: t })),
    });
    const asc = await allItems(next(), conv.id, { order: 'asc', limit: 2 });
    c.expect(asc.map(textOf).join('|') === texts.join('|'), `asc ${JSON.stringify(asc.map(textOf))}`);
    const desc = await allItems(next(), conv.id, { order: 'desc', limit: 3 });
    c.expect(desc.map(textOf).join('|') === [...texts].reverse().join('|'),
      `desc ${JSON.stringify(desc.map(textOf))}`);
    const byDefault = await next().conversations.items.list(conv.id, { limit: 2 });
    c.expect(byDefault.data.length === 2 && textOf(byDefault.data[0]) === 'message 7' &&
      byDefault.has_more === true && byDefault.last_id === byDefault.data[1].id,
    `default page ${JSON.stringify(byDefault.data)}`);
    const after = await next().conversations.items.list(conv.id, { order: 'asc', after: asc[4].id, limit: 10 });
    c.expect(after.data.map(textOf).join('|') === 'message 6|message 7' && after.has_more === false &&
      after.data[0].id === asc[5].id && after.last_id === asc[6].id, `after ${JSON.stringify(after.data)}`);
    const ids = new Set(asc.map((i) => i.id));
    c.expect(ids.size === 7, 'item ids are distinct');
    return { asc: asc.length, desc: desc.length };
  },
  async isolation() {
    const conv = await next().conversations.create({ items: [{ role: 'user', content: 'mine' }] });
    for (const other of others) {
      await expectNotFound(() => other.conversations.retrieve(conv.id), 'another user retrieves');
      await expectNotFound(() => other.conversations.items.list(conv.id), 'another user lists');
      await expectNotFound(() => other.conversations.update(conv.id, { metadata: { a: 'b' } }),
        'another user updates');
      await expectNotFound(() => other.conversations.delete(conv.id), 'another user deletes');
      await expectNotFound(() => other.conversations.items.create(conv.id, {
        items: [{ role: 'user', content: 'intrusion' }],
      }), 'another user appends');
    }
    await expectNotFound(() => next().conversations.retrieve('conv_0123456789abcdef0123456789abcdef'),
      'unknown id');
    await expectNotFound(() => next().conversations.retrieve('resp_nope'), 'not a conversation id');
    const still = await allItems(next(), conv.id);
    c.expect(still.length === 1 && textOf(still[0]) === 'mine', `after others ${JSON.stringify(still)}`);
    return { id: conv.id };
  },
});
