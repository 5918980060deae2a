// Switchyard console: plain JavaScript, no build step. Every call goes to
// the broker's JSON Admin API (/api/v1/admin/{Method}) with the bearer
// token given above, so the console can do exactly what the token may.
// Rates come from /metrics, sampled at each refresh.
'use strict';

const REFRESH_MS = 2000;
const REDRIVE_BATCH = 5;
const FLOW_EVENTS = 500;
const TOKEN_KEY = 'switchyard.token';
const JAEGER_KEY = 'switchyard.jaeger';

// ---- DOM helpers (text is always set as text: nothing from the broker
// is ever parsed as HTML) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'style') el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function table(headings, rows, attrs) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headings.map(([text, cls]) => h('th', { class: cls }, text)))),
    h('tbody', {}, rows));
}

function banner(text, kind) {
  const el = document.getElementById('banner');
  el.hidden = !text;
  el.className = kind || '';
  el.textContent = text || '';
}

const fmt = {
  count: (n) => Number(n || 0).toLocaleString('en-US'),
  rate: (r) => (r === null || r === undefined ? '–' : `${r >= 10 ? r.toFixed(0) : r.toFixed(1)}/s`),
  seconds: (s) => `${Number(s || 0).toFixed(1)} s`,
  time: (ms) => (ms ? new Date(Number(ms)).toISOString().replace('T', ' ').replace('Z', '') : '–'),
};

// ---- the API ----

async function api(method, body) {
  const headers = { 'content-type': 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`/api/v1/admin/${method}`, {
    method: 'POST', headers, body: JSON.stringify(body || {}),
  });
  const reply = await response.json().catch(() => ({ code: 'bad_reply', message: response.statusText }));
  if (!response.ok) {
    const error = new Error(reply.message || response.statusText);
    error.code = reply.code;
    error.status = response.status;
    throw error;
  }
  return reply;
}

/// Prometheus samples by `name{labels}`, and their rates between the two
/// latest samplings.
class Rates {
  constructor() { this.previous = null; this.current = null; }

  async sample() {
    const text = await (await fetch('/metrics')).text();
    const values = new Map();
    for (const line of text.split('\n')) {
      const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
      if (m) values.set(m[1] + (m[2] || ''), Number(m[3]));
    }
    this.previous = this.current;
    this.current = { at: performance.now(), values };
  }

  static key(name, labels) {
    const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    return `switchyard_${name}${parts.length ? `{${parts.join(',')}}` : ''}`;
  }

  value(name, labels) { return this.current?.values.get(Rates.key(name, labels || {})) ?? 0; }

  /// Per second since the previous sampling; null before there is one.
  rate(name, labels) {
    if (!this.previous || !this.current) return null;
    const key = Rates.key(name, labels || {});
    const seconds = (this.current.at - this.previous.at) / 1000;
    if (seconds <= 0) return null;
    const delta = (this.current.values.get(key) ?? 0) - (this.previous.values.get(key) ?? 0);
    return Math.max(0, delta / seconds);
  }
}

// ---- the choreography: event types → rules → topics → subscriptions →
// dead-letter topics (the same map as `switchyard graph`) ----

function eventTypes(rule) {
  let pattern = {};
  try { pattern = JSON.parse(rule.pattern_json); } catch { /* shown as any */ }
  if (!Array.isArray(pattern.type)) return [`any type on ${rule.bus}`];
  return pattern.type.map((m) => {
    if (typeof m === 'string') return m;
    if (m && typeof m.prefix === 'string') return `${m.prefix}*`;
    if (m && typeof m.suffix === 'string') return `*${m.suffix}`;
    return `type ${JSON.stringify(m)}`;
  });
}

function choreography(rules, subscriptions) {
  const nodes = new Map();
  const edges = new Map();
  const node = (kind, name, extra) => {
    const id = `${kind}:${name}`;
    if (!nodes.has(id)) nodes.set(id, { id, kind, name, ...extra });
    return id;
  };
  const edge = (from, to, extra) => {
    const id = `${from}->${to}`;
    if (!edges.has(id)) edges.set(id, { id, from, to, ...extra });
  };
  const deadTopics = new Set(subscriptions.map((x) => x.dead_letter_topic).filter(Boolean));
  for (const rule of rules.filter((r) => r.enabled)) {
    const matches = ['events_routed_total', { bus: rule.bus, rule: rule.name }];
    const r = node('rule', rule.name, { rate: matches });
    // A rule of one type node matches only events of that type: its rate
    // is the edge's. (No metric splits a rule's matches by type.)
    const types = eventTypes(rule);
    for (const type of types) edge(node('type', type), r, types.length === 1 ? { rate: matches } : {});
    for (const topic of rule.targets) {
      edge(r, node(deadTopics.has(topic) ? 'dlq' : 'topic', topic), { rate: matches });
    }
  }
  for (const sub of subscriptions) {
    const n = node('subscription', sub.name);
    edge(node('topic', sub.topic), n, { rate: ['deliveries_total', { subscription: sub.name }] });
    if (sub.dead_letter_topic) {
      edge(n, node('dlq', sub.dead_letter_topic), { dead: true, rate: ['dead_letters_total', { subscription: sub.name }] });
    }
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

const COLUMNS = [['type', 'Event types'], ['rule', 'Rules'], ['topic', 'Topics'], ['subscription', 'Subscriptions'], ['dlq', 'Dead letters']];

/// Columns by kind; within a column, nodes ordered by the mean row of
/// their sources (fewer crossings); then positions.
function layout(graph) {
  const W = 210; const H = 34; const GAP = 14; const COL = 280; const TOP = 34;
  const incoming = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) incoming.get(e.to).push(e.from);
  const row = new Map();
  const columns = COLUMNS.map(([kind]) => graph.nodes.filter((n) => n.kind === kind));
  columns.forEach((column, c) => {
    const weight = (n) => {
      const rows = incoming.get(n.id).map((id) => row.get(id)).filter((r) => r !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : -1;
    };
    if (c > 0) column.sort((a, b) => weight(a) - weight(b) || a.name.localeCompare(b.name));
    else column.sort((a, b) => a.name.localeCompare(b.name));
    column.forEach((n, i) => {
      row.set(n.id, i);
      n.x = 10 + c * COL; n.y = TOP + i * (H + GAP); n.w = W; n.h = H;
    });
  });
  const height = TOP + Math.max(1, ...columns.map((c) => c.length)) * (H + GAP);
  return { width: 10 + COLUMNS.length * COL, height };
}

function drawMap(graph, rates) {
  const size = layout(graph);
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const svgEl = s('svg', { class: 'map', width: size.width, height: size.height, viewBox: `0 0 ${size.width} ${size.height}`, 'data-testid': 'map' });
  COLUMNS.forEach(([, title], c) => svgEl.append(s('text', { class: 'column-title', x: 10 + c * 280, y: 18 }, title)));
  for (const e of graph.edges) {
    const a = byId.get(e.from); const b = byId.get(e.to);
    const x1 = a.x + a.w; const y1 = a.y + a.h / 2; const x2 = b.x; const y2 = b.y + b.h / 2;
    const mid = (x1 + x2) / 2;
    const rate = e.rate ? rates.rate(...e.rate) : null;
    const cls = ['edge', e.dead && 'dead', rate > 0 && 'live'].filter(Boolean).join(' ');
    const g = s('g', { class: cls, 'data-edge': e.id, 'data-rate': rate === null ? '' : rate.toFixed(2) },
      s('path', { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 4},${y2}`, 'marker-end': 'url(#arrow)' }));
    if (e.rate) g.append(s('text', { x: mid, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle' }, fmt.rate(rate)));
    svgEl.append(g);
  }
  for (const n of graph.nodes) {
    const label = n.name.length > 30 ? `${n.name.slice(0, 29)}…` : n.name;
    const rate = n.rate ? rates.rate(...n.rate) : null;
    svgEl.append(s('g', { class: `node ${n.kind}`, 'data-node': n.id, 'data-rate': rate === null ? undefined : rate.toFixed(2) },
      s('title', {}, `${n.kind} ${n.name}${n.rate ? ` · ${fmt.rate(rate)} matches` : ''}`),
      s('rect', { x: n.x, y: n.y, width: n.w, height: n.h }),
      s('text', { x: n.x + 8, y: n.y + 21 }, n.rate && label.length > 22 ? `${label.slice(0, 21)}…` : label),
      n.rate ? s('text', { class: 'rate', x: n.x + n.w - 6, y: n.y + 21, 'text-anchor': 'end' }, fmt.rate(rate)) : ''));
  }
  svgEl.prepend(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 8, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse' },
    s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#9aa4b5' }))));
  return svgEl;
}

// ---- views: each renders into `main` and refreshes until left ----

/// The answer of `call`, or the refusal to show in its panel's place (a
/// missing token still stops the view: the banner asks for one).
async function attempt(call) {
  try {
    return { value: await call() };
  } catch (error) {
    if (error.status === 401) throw error;
    return { error };
  }
}

/// A panel the caller may not see: which grant it needs, from the broker.
function hidden(error) {
  return h('p', { class: 'bad', 'data-testid': 'panel-hidden' }, error.status === 403 ? `Hidden: ${error.message}` : `Could not load: ${error.message}`);
}

async function overview(main, rates) {
  const [topics, subs, rules] = await Promise.all([
    attempt(() => api('ListTopics')), attempt(() => api('ListSubscriptions')), attempt(() => api('ListRules')), rates.sample(),
  ]);
  const refusals = [topics, subs, rules].filter((x) => x.error);
  if (refusals.length === 3) throw refusals[0].error;
  const described = subs.value
    ? await Promise.all(subs.value.subscriptions.map(async (x) => ({ sub: x, ...(await attempt(() => api('DescribeSubscription', { name: x.name }))) })))
    : [];
  const shown = described.filter((d) => d.value).map((d) => d.value);
  const status = rules.value?.status || {};
  const ruleList = rules.value?.rules || [];
  const buses = [...new Set(ruleList.map((r) => r.bus).concat(['default']))].sort();
  const totalLag = shown.reduce((sum, d) => sum + Number(d.total_lag), 0);
  const dead = shown.reduce((sum, d) => sum + Number(d.dead_letters), 0);
  const userTopics = (topics.value?.topics || []).filter((t) => !t.name.startsWith('__'));
  main.replaceChildren(
    h('div', { class: 'cards' },
      card('Topics', topics.value ? userTopics.length : '–'),
      card('Subscriptions', subs.value ? subs.value.subscriptions.length : '–'),
      card('Total lag (events)', fmt.count(totalLag), 'total-lag'),
      card('Dead letters waiting', fmt.count(dead), 'dead-letters'),
      card('Rule set', rules.value ? `v${status.version}` : '–', 'rules-version',
        !rules.value ? '' : status.last_error ? h('div', { class: 'bad' }, 'last reload failed') : h('div', { class: 'ok' }, 'in force'))),
    h('h2', {}, 'Subscriptions'),
    h('section', { 'data-panel': 'subscriptions' }, subs.error ? hidden(subs.error) : table(
      [['Subscription'], ['Topic'], ['Consumers', 'num'], ['Lag (events)', 'num'], ['Lag (seconds)', 'num'], ['In flight', 'num'], ['Waiting retry', 'num'], ['Parked keys'], ['Dead letters', 'num'], ['Deliveries', 'num'], ['Push']],
      described.map(({ sub, value: d, error }) => {
        if (!d) {
          const why = error.status === 403 ? `Hidden: ${error.message}` : error.message;
          return h('tr', { 'data-subscription': sub.name, 'data-hidden': 'true' },
            h('td', {}, sub.name), h('td', {}, sub.topic), h('td', { colspan: 9, class: 'bad' }, why));
        }
        const inFlight = d.partitions.reduce((sum, p) => sum + Number(p.in_flight), 0);
        const retrying = d.partitions.reduce((sum, p) => sum + Number(p.waiting_retry), 0);
        const nextRetry = Math.min(...d.partitions.map((p) => Number(p.next_retry_unix_ms)).filter((ms) => ms > 0));
        const parked = d.partitions.flatMap((p) => p.parked_keys);
        const lagSeconds = rates.value('subscription_lag_seconds', { subscription: sub.name });
        const idle = !d.push && Number(d.consumers) === 0;
        return h('tr', { 'data-subscription': sub.name },
          h('td', {}, h('a', { href: `#/subscription/${encodeURIComponent(sub.name)}` }, sub.name)),
          h('td', {}, sub.topic),
          h('td', { class: `num ${idle ? 'warn' : ''}`, 'data-field': 'consumers', title: idle ? 'no consumer connected: nothing is delivered' : undefined }, idle ? '0 (none connected)' : d.consumers),
          h('td', { class: `num ${Number(d.total_lag) > 0 ? 'warn' : ''}`, 'data-field': 'lag-events' }, fmt.count(d.total_lag)),
          h('td', { class: 'num', 'data-field': 'lag-seconds' }, fmt.seconds(lagSeconds)),
          h('td', { class: 'num', 'data-field': 'in-flight' }, inFlight),
          h('td', { class: 'num', 'data-field': 'waiting-retry', title: retrying ? `next attempt ${fmt.time(nextRetry)} UTC` : undefined }, retrying ? `${retrying} (next ${fmt.time(nextRetry).slice(11, 19)})` : 0),
          h('td', { 'data-field': 'parked-keys' }, parked.length ? parked.join(', ') : h('span', { class: 'muted' }, 'none')),
          h('td', { class: 'num', 'data-field': 'dead-letters' }, sub.dead_letter_topic
            ? h('a', { href: `#/dlq/${encodeURIComponent(sub.name)}`, class: Number(d.dead_letters) > 0 ? 'bad' : '' }, fmt.count(d.dead_letters))
            : h('span', { class: 'muted' }, '–')),
          h('td', { class: 'num' }, fmt.rate(rates.rate('deliveries_total', { subscription: sub.name }))),
          h('td', {}, d.push ? d.push.circuit : h('span', { class: 'muted' }, 'stream')));
      }))),
    h('h2', {}, 'Buses'),
    h('section', { 'data-panel': 'buses' }, rules.error ? hidden(rules.error) : table(
      [['Bus'], ['Rules', 'num'], ['Published', 'num'], ['Publish rate', 'num'], ['Matched no rule', 'num']],
      buses.map((bus) => h('tr', { 'data-bus': bus },
        h('td', {}, bus),
        h('td', { class: 'num' }, ruleList.filter((r) => r.bus === bus).length),
        h('td', { class: 'num' }, fmt.count(rates.value('events_published_total', { bus }))),
        h('td', { class: 'num' }, fmt.rate(rates.rate('events_published_total', { bus }))),
        h('td', { class: 'num' }, fmt.count(rates.value('events_unmatched_total', { bus }))))))),
    h('h2', {}, 'Topics'),
    h('section', { 'data-panel': 'topics' }, topics.error ? hidden(topics.error) : table(
      [['Topic'], ['Partitions', 'num'], ['Retained events', 'num'], ['Append rate', 'num']],
      userTopics.map((t) => h('tr', { 'data-topic': t.name },
        h('td', {}, t.name),
        h('td', { class: 'num' }, t.partitions),
        h('td', { class: 'num', 'data-field': 'retained' }, fmt.count(t.retained_events)),
        h('td', { class: 'num' }, fmt.rate(rates.rate('events_stored_total', { topic: t.name }))))))),
    h('h2', {}, 'Rule set'),
    h('section', { 'data-panel': 'rules' }, rules.error ? hidden(rules.error) : h('div', {}, `Version ${status.version}, loaded ${fmt.time(status.loaded_at_unix_ms)} UTC. `,
      status.last_error ? h('span', { class: 'bad' }, `Last reload failed (${fmt.time(status.last_error_at_unix_ms)}): ${status.last_error}`) : h('span', { class: 'ok' }, 'Last reload succeeded.'))));
}

function card(label, value, testid, extra) {
  return h('div', { class: 'card', 'data-card': testid }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label), extra);
}

async function mapView(main, rates) {
  const [rules, subs] = await Promise.all([api('ListRules'), api('ListSubscriptions'), rates.sample()]);
  const graph = choreography(rules.rules, subs.subscriptions);
  main.replaceChildren(
    h('p', { class: 'muted' }, 'Event types → rules → topics → subscriptions → dead-letter topics; live rates per second: matches on rules and their edges, deliveries into subscriptions, dead letters out of them.'),
    h('section', {}, drawMap(graph, rates)));
}

async function flowView(main, rates, query) {
  const jaeger = localStorage.getItem(JAEGER_KEY) || 'http://localhost:16686';
  const input = h('input', { id: 'flow-query', size: 48, placeholder: 'trace id, event id or correlation id (e.g. order-4)', value: query || '' });
  const jaegerInput = h('input', { id: 'jaeger-url', size: 28, value: jaeger, title: 'Jaeger UI address for trace links' });
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    localStorage.setItem(JAEGER_KEY, jaegerInput.value.trim());
    location.hash = `#/flow/${encodeURIComponent(input.value.trim())}`;
  } }, input, h('button', { type: 'submit', id: 'flow-find' }, 'Find flow'), h('span', { class: 'muted' }, 'Jaeger:'), jaegerInput);
  const result = h('div', { id: 'flow-result' });
  main.replaceChildren(form, result);
  if (!query) {
    result.append(h('p', { class: 'muted' }, 'Every hop of every event is recorded: published (by whom, routed by which rules to which topics), delivered (attempt n), acked, nacked, dead-lettered, redriven.'));
    return 'static';
  }
  let flow;
  try {
    flow = await api('GetFlow', { query, limit: FLOW_EVENTS });
  } catch (error) {
    result.append(h('p', { class: 'bad', 'data-testid': 'flow-error' }, error.message));
    return 'static';
  }
  if (!flow.events.length) {
    result.append(h('p', { class: 'muted', 'data-testid': 'flow-none' }, `No flow found for “${query}”: no recorded event has this trace id, event id or correlation id (or it is older than the flow history keeps).`));
    return 'static';
  }
  // Publishing comes first (its step is stamped after the durable append,
  // which a fast delivery can beat); the rest by time.
  const first = (step) => (step.step === 'published' ? 0 : 1);
  for (const e of flow.events) e.steps.sort((a, b) => first(a) - first(b) || Number(a.at_unix_ms) - Number(b.at_unix_ms) || STEP_ORDER.indexOf(a.step) - STEP_ORDER.indexOf(b.step));
  const steps = flow.events.flatMap((e) => e.steps.map((step) => ({ event: e, step })));
  const times = steps.map((x) => Number(x.step.at_unix_ms));
  const start = Math.min(...times); const span = Math.max(1, Math.max(...times) - start);
  const traces = [...new Set(steps.map((x) => x.step.trace_id).filter(Boolean))];
  result.append(
    h('p', { 'data-testid': 'flow-summary' }, `${flow.events.length} event(s)${flow.events.length === FLOW_EVENTS ? ' (the first; there may be more)' : ''}, ${steps.length} step(s) over ${span} ms, from ${fmt.time(start)} UTC. `,
      traces.map((t) => h('a', { href: `${jaegerInput.value.replace(/\/$/, '')}/trace/${t}`, target: '_blank', rel: 'noopener', 'data-testid': 'jaeger-link' }, `trace ${t.slice(0, 12)}… in Jaeger `))),
    h('section', {}, table([['+ms', 'num'], ['Step'], ['Where'], ['Detail'], ['Timeline']],
      flow.events.flatMap((e) => {
        // Shown in order, the +ms never goes back (a publish is stamped
        // after its append, which a fast delivery can beat).
        let shown = 0;
        const elapsed = (step) => { shown = Math.max(shown, Number(step.at_unix_ms) - start); return shown; };
        return [
        h('tr', { class: 'event-head', 'data-flow-event': e.id }, h('td', { colspan: 5 }, `${e.steps.find((x) => x.event_type)?.event_type || '(type not recorded)'} · ${e.source} / ${e.id}`)),
        ...e.steps.map((step) => h('tr', { 'data-step': step.step, 'data-event': e.id, 'data-subscription': step.subscription || undefined },
          h('td', { class: 'num', 'data-field': 'elapsed' }, elapsed(step)),
          h('td', {}, h('span', { class: `badge ${step.step}` }, step.step.replace('_', ' '))),
          h('td', {}, stepWhere(step)),
          h('td', {}, stepDetail(step)),
          h('td', { class: 'bar' }, h('div', { class: 'track' }, h('div', { class: 'tick', style: `left:${((Number(step.at_unix_ms) - start) / span) * 100}%` }))))),
        ];
      }), { class: 'timeline' })));
  return 'static';
}

/// Steps of one millisecond in the order they happen.
const STEP_ORDER = ['published', 'fired', 'delivered', 'nacked', 'dead_lettered', 'acked', 'redriven'];

function position(p) { return p ? `${p.topic}/${p.partition}@${p.offset}` : ''; }

function stepWhere(step) {
  switch (step.step) {
    case 'published': case 'fired':
      if (step.step === 'published' && Number(step.scheduled_for_unix_ms)) return 'stored until its time';
      return step.targets.length ? step.targets.map(position).join(', ') : h('span', { class: 'warn' }, 'no rule matched');
    case 'redriven': return `${step.subscription} → ${step.targets.map(position).join(', ')}`;
    case 'dead_lettered': return `${step.subscription} → ${step.dead_letter_topic}`;
    default: return `${step.subscription} (${position(step.position)})`;
  }
}

function stepDetail(step) {
  const parts = [];
  if (step.publisher) parts.push(`by ${step.publisher}`);
  if (step.bus && step.step === 'published') parts.push(`bus ${step.bus}`);
  if (step.rules.length) parts.push(`rules ${step.rules.join(', ')}`);
  if (step.attempt) parts.push(`attempt ${step.attempt}`);
  if (step.reason) parts.push(`reason: ${step.reason}`);
  if (Number(step.scheduled_for_unix_ms)) parts.push(`scheduled for ${fmt.time(step.scheduled_for_unix_ms)}`);
  if (step.correlation) parts.push(`correlation ${step.correlation}`);
  return parts.join(' · ');
}

async function dlqView(main, rates, name) {
  const subs = (await api('ListSubscriptions')).subscriptions.filter((x) => x.dead_letter_topic);
  if (!subs.length) {
    main.replaceChildren(h('p', { class: 'muted' }, 'No subscription has a dead-letter topic.'));
    return 'static';
  }
  name = name || subs[0].name;
  const pick = h('select', { id: 'dlq-subscription', onchange: () => { location.hash = `#/dlq/${encodeURIComponent(pick.value)}`; } },
    subs.map((x) => h('option', { value: x.name, selected: x.name === name }, x.name)));
  const filter = h('textarea', { id: 'dlq-filter', rows: 2, placeholder: 'event pattern to filter by, e.g. {"data": {"currency": ["EUR"]}} (empty: all)' });
  filter.value = sessionStorage.getItem(`switchyard.dlqfilter.${name}`) || '';
  const list = h('div', { id: 'dlq-list' });
  const progress = h('div', { class: 'row', id: 'redrive-progress' });
  const selectedButton = h('button', { id: 'redrive-selected', disabled: true }, 'Redrive selected');
  const allButton = h('button', { id: 'redrive-all', class: 'secondary' }, 'Redrive all matching');
  main.replaceChildren(
    h('div', { class: 'row' }, h('label', {}, 'Subscription '), pick),
    h('section', {}, filter, h('div', { class: 'row' },
      h('button', { id: 'dlq-apply', class: 'secondary', onclick: () => load() }, 'Apply filter'), selectedButton, allButton, progress)),
    list);

  let letters = [];
  const selected = () => [...list.querySelectorAll('input[type=checkbox][data-position]:checked')].map((box) => {
    const [partition, offset] = box.dataset.position.split(':').map(Number);
    return { partition, offset };
  });
  const refreshButtons = () => {
    const n = selected().length;
    selectedButton.disabled = n === 0;
    selectedButton.textContent = n ? `Redrive selected (${n})` : 'Redrive selected';
  };
  async function load() {
    sessionStorage.setItem(`switchyard.dlqfilter.${name}`, filter.value);
    try {
      letters = (await api('ListDeadLetters', { subscription: name, limit: 1000, filter_json: filter.value.trim() })).dead_letters;
    } catch (error) {
      list.replaceChildren(h('p', { class: 'bad', 'data-testid': 'dlq-error' }, error.message));
      return;
    }
    const waiting = letters.filter((d) => !d.dead_letter.redriven).length;
    list.replaceChildren(h('p', { 'data-testid': 'dlq-summary' }, `${letters.length} dead letter(s) listed, ${waiting} waiting.`),
      h('section', {}, table([[''], ['Place'], ['Event'], ['Type'], ['Attempts', 'num'], ['Last reason'], ['Last attempt'], ['State']],
        letters.map((d) => {
          const e = d.event || {}; const meta = d.dead_letter;
          return h('tr', { 'data-dead-letter': e.id, 'data-state': meta.redriven ? 'redriven' : 'waiting' },
            h('td', {}, meta.redriven ? '' : h('input', { type: 'checkbox', 'data-position': `${d.partition}:${d.offset}`, onchange: refreshButtons })),
            h('td', {}, `${d.topic}/${d.partition}@${d.offset}`),
            h('td', {}, h('a', { href: `#/flow/${encodeURIComponent(e.id)}` }, e.id)),
            h('td', {}, e.type),
            h('td', { class: 'num' }, meta.attempts),
            h('td', {}, meta.last_reason),
            h('td', {}, fmt.time(meta.last_attempt_unix_ms)),
            h('td', {}, meta.redriven ? h('span', { class: 'ok' }, 'redriven') : h('span', { class: 'warn' }, 'waiting')));
        }))));
    refreshButtons();
  }

  async function redrive(only) {
    const filterJson = filter.value.trim();
    const count = only.length || letters.filter((d) => !d.dead_letter.redriven).length;
    const what = only.length ? `${only.length} selected dead letter(s)` : `every waiting dead letter${filterJson ? ' matching the filter' : ''} (${count} listed)`;
    if (!(await confirmAction(`Redrive ${what} of ${name}? Each is delivered to ${name} again from attempt 1 (its other subscribers are not affected). This is audit-logged.`))) return;
    const bar = h('progress', { max: Math.max(count, 1), value: 0 });
    const label = h('span', { 'data-testid': 'redrive-status' }, 'starting…');
    progress.replaceChildren(bar, label);
    let done = 0;
    try {
      for (;;) {
        const reply = await api('RedriveDeadLetters', { subscription: name, filter_json: filterJson, limit: REDRIVE_BATCH, only });
        done += reply.redriven;
        bar.max = Math.max(1, done + reply.remaining);
        bar.value = done;
        label.textContent = `redriven ${done} of ${done + reply.remaining}`;
        if (reply.redriven === 0 || reply.remaining === 0) break;
      }
      await load();
      label.textContent = `done: redriven ${done}`;
    } catch (error) {
      label.textContent = `stopped after ${done}: ${error.message}`;
      label.className = 'bad';
      await load();
    }
  }
  selectedButton.addEventListener('click', () => redrive(selected()));
  allButton.addEventListener('click', () => redrive([]));
  await load();
  return 'static';
}

/// Asks before a change; resolves true on Confirm. With `typed`, Confirm
/// stays disabled until that text is typed (for deletions).
function confirmAction(text, typed) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  const input = document.getElementById('confirm-typed');
  const ok = document.getElementById('confirm-ok');
  input.hidden = !typed;
  input.value = '';
  input.placeholder = typed ? `type ${typed} to confirm` : '';
  input.oninput = () => { ok.disabled = input.value !== typed; };
  ok.disabled = Boolean(typed);
  dialog.returnValue = 'cancel';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

async function rulesView(main, rates) {
  const [rules, topics] = await Promise.all([api('ListRules'), api('ListTopics'), rates.sample()]);
  const status = rules.status || {};
  const buses = [...new Set(rules.rules.map((r) => r.bus).concat(['default']))].sort();
  const bus = h('select', { id: 'test-bus' }, buses.map((b) => h('option', { value: b }, b)));
  const target = h('select', { id: 'test-target' }, h('option', { value: '' }, '(no topic: matches only)'),
    topics.topics.filter((t) => !t.name.startsWith('__')).map((t) => h('option', { value: t.name }, t.name)));
  const last = h('input', { id: 'test-last', type: 'number', min: 1, value: 100, style: 'width:90px' });
  const pattern = h('textarea', { id: 'test-pattern', rows: 4, placeholder: '{"type": ["com.example.order.placed"], "data": {"total": [{"numeric": [">", 500]}]}}' });
  const result = h('div', { id: 'test-result' });
  const test = async () => {
    let parsed;
    try { parsed = JSON.parse(pattern.value); } catch (error) {
      result.replaceChildren(h('p', { class: 'bad' }, `The pattern is not JSON: ${error.message}`));
      return;
    }
    const topic = target.value || 'console-pattern-test';
    const yaml = `rules:\n  - name: console-pattern-test\n    bus: ${JSON.stringify(bus.value)}\n    pattern: ${JSON.stringify(parsed)}\n    targets:\n      - topic: ${JSON.stringify(topic)}\n`;
    try {
      const reply = await api('DryRunRules', { rules_yaml: yaml, bus: bus.value, last: Number(last.value) || 100, add_to_current: true, samples: 50 });
      const tested = reply.rules.find((r) => r.name === 'console-pattern-test');
      const gaining = reply.subscriptions.filter((x) => Number(x.received_after) > Number(x.received_before));
      result.replaceChildren(
        h('p', { 'data-testid': 'test-summary' }, `Matches ${tested.matched_after} of the ${reply.examined} newest recorded event(s) of bus ${bus.value}.`),
        gaining.length
          ? h('p', { 'data-testid': 'test-subscriptions' }, 'Would also receive them: ', gaining.map((x) => `${x.name} (+${x.received_after - x.received_before})`).join(', '))
          : h('p', { class: 'muted', 'data-testid': 'test-subscriptions' }, target.value ? 'No subscription would receive more events.' : 'Pick a target topic to see which subscriptions would receive them.'),
        table([['Event id'], ['Type'], ['Source'], ['Time']], tested.matched.slice().reverse().map((e) => h('tr', { 'data-matched': e.id },
          h('td', {}, h('a', { href: `#/flow/${encodeURIComponent(e.id)}` }, e.id)), h('td', {}, e.type), h('td', {}, e.source), h('td', {}, e.time || '')))));
    } catch (error) {
      result.replaceChildren(h('p', { class: 'bad', 'data-testid': 'test-error' }, error.message));
    }
  };
  main.replaceChildren(
    h('h2', {}, 'Test a pattern against recorded events'),
    h('section', {}, pattern, h('div', { class: 'row' }, 'Bus', bus, 'Target topic', target, 'Last', last, 'events',
      h('button', { id: 'test-run', onclick: test }, 'Test pattern')), result),
    h('h2', {}, `Rules in force (version ${status.version}, loaded ${fmt.time(status.loaded_at_unix_ms)} UTC)`),
    status.last_error ? h('p', { class: 'bad' }, `Last reload failed: ${status.last_error}`) : '',
    h('section', {}, table([['Rule'], ['Bus'], ['Pattern'], ['Targets'], ['Matches', 'num']],
      rules.rules.map((r) => h('tr', { 'data-rule': r.name, class: r.enabled ? '' : 'muted' },
        h('td', {}, h('strong', {}, r.name), r.description ? h('div', { class: 'muted' }, r.description) : '', r.enabled ? '' : h('div', {}, '(disabled)')),
        h('td', {}, r.bus),
        h('td', {}, h('code', {}, r.pattern_json)),
        h('td', {}, r.targets.join(', ')),
        h('td', { class: 'num' }, fmt.count(rates.value('events_routed_total', { bus: r.bus, rule: r.name }))))))));
  return 'static';
}

async function subscriptionView(main, rates, name) {
  const mine = generation;
  const described = await api('DescribeSubscription', { name });
  const sub = described.subscription;
  const progress = h('div', { id: 'partitions' });
  const outcome = h('span', { 'data-testid': 'action-status' });
  const render = (d) => progress.replaceChildren(
    h('p', { 'data-testid': 'subscription-summary' },
      !d.push && Number(d.consumers) === 0 ? h('span', { class: 'warn' }, 'no consumer connected: nothing is delivered') : `${d.consumers} consumer(s) connected`,
      ` · lag ${fmt.count(d.total_lag)} event(s), ${fmt.seconds(Math.max(0, ...d.partitions.map((p) => Number(p.oldest_unacked_age_ms))) / 1000)} · ${fmt.count(d.dead_letters)} dead letter(s) waiting`,
      d.push ? ` · push circuit ${d.push.circuit}${d.push.last_error ? ` (${d.push.last_error})` : ''}` : ''),
    table([['Topic'], ['Partition', 'num'], ['Committed', 'num'], ['End', 'num'], ['Lag', 'num'], ['In flight', 'num'], ['Waiting retry', 'num'], ['Next attempt'], ['Oldest unacked', 'num'], ['Parked keys']],
      d.partitions.map((p) => h('tr', { 'data-partition': `${p.topic}/${p.partition}` },
        h('td', {}, p.topic), h('td', { class: 'num' }, p.partition), h('td', { class: 'num' }, fmt.count(p.committed_offset)),
        h('td', { class: 'num' }, fmt.count(p.end_offset)), h('td', { class: 'num', 'data-field': 'lag' }, fmt.count(p.lag)),
        h('td', { class: 'num' }, p.in_flight),
        h('td', { class: 'num', 'data-field': 'waiting-retry' }, p.waiting_retry),
        h('td', { 'data-field': 'next-retry' }, Number(p.next_retry_unix_ms) ? `${fmt.time(p.next_retry_unix_ms)} UTC` : ''),
        h('td', { class: 'num', 'data-field': 'oldest-unacked', title: 'age of the oldest event not yet acked, delivered or not: the lag in time' }, fmt.seconds(Number(p.oldest_unacked_age_ms) / 1000)),
        h('td', {}, p.parked_keys.join(', '))))));
  const target = h('select', { id: 'seek-target' },
    h('option', { value: 'latest' }, 'the end (skip everything not delivered)'),
    h('option', { value: 'earliest' }, 'the oldest retained event (deliver all again)'),
    h('option', { value: 'time' }, 'a time (UTC)'));
  const when = h('input', { id: 'seek-time', type: 'datetime-local', step: 1 });
  const seek = async () => {
    const request = { name };
    let what;
    if (target.value === 'time') {
      const ms = Date.parse(`${when.value}Z`);
      if (Number.isNaN(ms)) { outcome.textContent = 'Pick the time to seek to.'; return; }
      request.time_unix_ms = ms;
      what = `the first event at or after ${when.value} UTC`;
    } else {
      request[target.value] = true;
      what = target.value === 'latest' ? 'the end of every partition: events not yet delivered are skipped' : 'the oldest retained event: everything retained is delivered again';
    }
    if (!(await confirmAction(`Move ${name} to ${what}? In-flight deliveries still count. This is audit-logged.`))) return;
    try {
      render(await api('SeekSubscription', request));
      outcome.textContent = 'done: moved';
    } catch (error) { outcome.textContent = `refused: ${error.message}`; }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete subscription ${name}? Its committed offsets go with it and connected consumers are cut off. The topic and its events stay. This is audit-logged.`, name))) return;
    try {
      await api('DeleteSubscription', { name });
      location.hash = '#/overview';
    } catch (error) { outcome.textContent = `refused: ${error.message}`; }
  };
  render(described);
  main.replaceChildren(
    h('h2', {}, `Subscription ${name}`),
    h('p', { class: 'muted' }, `topic ${sub.topic} · ack deadline ${sub.ack_deadline_seconds} s · max in flight ${sub.max_in_flight} · ${sub.ordering === 'ORDERING_BY_KEY' ? 'ordered by key' : 'unordered'} · `,
      sub.dead_letter_topic ? h('a', { href: `#/dlq/${encodeURIComponent(name)}` }, `dead letters after ${sub.max_attempts} attempt(s) to ${sub.dead_letter_topic}`) : 'retried forever (no dead-letter topic)'),
    h('section', {}, progress),
    h('h2', {}, 'Actions'),
    h('section', {},
      h('div', { class: 'row' }, 'Seek to', target, when, h('button', { id: 'seek', onclick: seek }, 'Seek…')),
      h('div', { class: 'row' }, h('button', { id: 'delete-subscription', class: 'danger', onclick: remove }, 'Delete subscription…'), outcome)));
  // Progress refreshes in the background; the actions stay as they are.
  (async () => {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      if (mine !== generation) return;
      try { render(await api('DescribeSubscription', { name })); } catch { return; }
    }
  })();
  return 'static';
}

// ---- routing ----

const VIEWS = { overview, map: mapView, flow: flowView, dlq: dlqView, rules: rulesView, subscription: subscriptionView };
let generation = 0;

async function route() {
  const mine = ++generation;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const view = VIEWS[name] ? name : 'overview';
  const argument = rest.length ? decodeURIComponent(rest.join('/')) : '';
  for (const link of document.querySelectorAll('nav a')) link.classList.toggle('active', link.dataset.view === view);
  const main = document.getElementById('view');
  main.dataset.view = view;
  delete main.dataset.loaded;
  // Each navigation renders into a slot of its own: a view whose answer
  // comes after the user moved on paints only its own detached slot.
  const slot = h('div', { class: 'slot' }, h('p', { class: 'muted' }, 'loading…'));
  main.replaceChildren(slot);
  const rates = new Rates();
  for (;;) {
    let outcome;
    try {
      outcome = await VIEWS[view](slot, rates, argument);
      if (mine !== generation) return;
      banner('');
      main.dataset.loaded = String(Date.now());
    } catch (error) {
      if (mine !== generation) return;
      if (error.status === 401) banner('This broker wants a bearer token: enter one above.', 'error');
      else if (error.status === 403) banner(`Not allowed: ${error.message}`, 'error');
      else banner(`The broker could not be reached or refused: ${error.message}`, 'error');
      if (slot.querySelector('p.muted')?.textContent === 'loading…') {
        slot.replaceChildren(h('p', { class: 'bad', 'data-testid': 'view-error' }, error.message));
      }
    }
    if (outcome === 'static') return;
    // A tab nobody looks at costs the broker nothing: wait until shown.
    do {
      await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      if (mine !== generation) return;
    } while (document.hidden);
  }
}

document.getElementById('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
document.getElementById('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById('token').value.trim());
  route();
});
document.getElementById('confirm-ok').addEventListener('click', () => document.getElementById('confirm').close('ok'));
document.getElementById('confirm-cancel').addEventListener('click', () => document.getElementById('confirm').close('cancel'));
window.addEventListener('hashchange', route);
route();
