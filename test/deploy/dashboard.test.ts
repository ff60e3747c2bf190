import { mintToken } from '../helpers/tokens';
import {
  hubMetricNames,
  parseExposition,
  readText,
  startHub,
  type LiveHub,
  type Obj,
  type ScrapedMetric,
} from './helpers';

const dashboard = JSON.parse(readText('deploy/grafana/dashboards/ssehub.json')) as Obj;
const panels = (dashboard.panels as Obj[]).filter((p) => p.type !== 'row');
const expressions = panels.flatMap((p) =>
  ((p.targets ?? []) as Obj[]).map((t) => ({ panel: p.title as string, expr: t.expr as string })),
);
const variableQueries = ((dashboard.templating?.list ?? []) as Obj[])
  .filter((v) => v.type === 'query')
  .map((v) => ({ panel: `variable ${v.name}`, expr: (v.query?.query ?? v.query) as string }));

/** Labels Prometheus adds to every series at scrape time (static configs and Kubernetes service discovery). */
const TARGET_LABELS = new Set(['job', 'instance', 'namespace', 'pod', 'service', 'container', 'endpoint']);

const PROMQL_WORDS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'rate',
  'irate',
  'increase',
  'delta',
  'idelta',
  'deriv',
  'histogram_quantile',
  'abs',
  'clamp_min',
  'clamp_max',
  'max_over_time',
  'min_over_time',
  'avg_over_time',
  'sum_over_time',
  'changes',
  'resets',
  'time',
  'vector',
  'scalar',
  'label_values',
  'e',
  'inf',
  'nan',
]);

interface Query {
  /** Metric (sample) names the expression selects. */
  metrics: string[];
  /** Label names used in selectors, grouping and label_values(). */
  labels: string[];
}

/** Reads the metric and label names out of a PromQL expression (Grafana variables and all). */
function analyse(expr: string): Query {
  const labels: string[] = [];
  let rest = expr
    .replace(/\$__\w+/g, '1m')
    .replace(/\$\{?\w+\}?/g, 'x')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\[[^\]]*\]/g, ' ');
  rest = rest.replace(/\{([^}]*)\}/g, (_, inner: string) => {
    for (const m of inner.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)) labels.push(m[1] as string);
    return ' ';
  });
  rest = rest.replace(/\b(by|without|on|ignoring)\s*\(([^)]*)\)/g, (_, __, inner: string) => {
    labels.push(
      ...inner
        .split(',')
        .map((l) => l.trim())
        .filter((l) => l !== ''),
    );
    return ' ';
  });
  rest = rest.replace(
    /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)/g,
    (_, metric: string, label: string) => {
      labels.push(label);
      return ` ${metric} `;
    },
  );
  const metrics = [...rest.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w) && w !== 'x');
  return { metrics, labels };
}

describe('Grafana dashboard deploy/grafana/dashboards/ssehub.json', () => {
  let hub: LiveHub;
  let scraped: Map<string, ScrapedMetric>;

  beforeAll(async () => {
    hub = await startHub();
    // One webhook publish: series that appear only once used (ssehub_published_total) show up too.
    const token = await mintToken('publisher', { roles: ['service'], secret: hub.secret });
    const published = await fetch(`${hub.url}/api/v1/webhook/agui`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'u1', type: 'TEXT_MESSAGE_CONTENT', delta: 'x' }),
    });
    expect(published.status).toBe(202);
    const res = await fetch(`${hub.url}/metrics`);
    expect(res.status).toBe(200);
    scraped = parseExposition(await res.text());
  });

  afterAll(async () => {
    await hub.close();
  });

  it('is a dashboard with unique panel ids and a data source variable on every query', () => {
    expect(typeof dashboard.uid).toBe('string');
    expect(typeof dashboard.title).toBe('string');
    const ids = (dashboard.panels as Obj[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const dsVariable = (dashboard.templating.list as Obj[]).find((v) => v.type === 'datasource');
    expect(dsVariable?.query).toBe('prometheus');
    for (const panel of panels) {
      expect(panel.datasource).toEqual({ type: 'prometheus', uid: `\${${dsVariable?.name}}` });
      expect((panel.targets as Obj[]).length).toBeGreaterThan(0);
      expect(panel.gridPos.x + panel.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  it('parses metric names out of PromQL (the check below can fail)', () => {
    expect(analyse('sum by (channel) (rate(foo_total{job=~"$job"}[$__rate_interval]))')).toEqual({
      metrics: ['foo_total'],
      labels: ['job', 'channel'],
    });
    expect(analyse('label_values(bar{a="b"}, instance)')).toEqual({ metrics: ['bar'], labels: ['a', 'instance'] });
  });

  it('queries only metrics and labels a running hub exports', () => {
    expect(expressions.length).toBeGreaterThan(10);
    for (const { panel, expr } of [...expressions, ...variableQueries]) {
      const { metrics, labels } = analyse(expr);
      expect({ panel, expr, metrics: metrics.length > 0 }).toEqual({ panel, expr, metrics: true });
      for (const metric of metrics) {
        const found = scraped.get(metric);
        expect({ panel, metric, exported: found !== undefined }).toEqual({ panel, metric, exported: true });
        for (const label of labels) {
          const known = TARGET_LABELS.has(label) || (found?.labels.has(label) ?? false);
          expect({ panel, metric, label, known }).toEqual({ panel, metric, label, known: true });
        }
      }
      // rate() and increase() only make sense on counters (and histogram buckets).
      for (const m of expr.matchAll(/\b(?:rate|increase)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/g)) {
        const name = m[1] as string;
        expect({ name, type: scraped.get(name)?.type }).toEqual({
          name,
          type: expect.stringMatching(/^(counter|histogram)$/),
        });
      }
    }
  });

  it('covers connections, delivery, lag, rejects, disconnects and transport health', () => {
    const all = expressions.map((e) => e.expr).join('\n');
    for (const needed of [
      /sum by \(channel\) \(sse_active_connections\{/,
      /sum by \(stream\) \(rate\(ssehub_frames_delivered_total\{/,
      /histogram_quantile\(0\.99, sum by \(le\) \(rate\(ssehub_delivery_seconds_bucket\{/,
      /sum by \(reason\) \(rate\(ssehub_events_rejected_total\{/,
      /sum by \(reason\) \(rate\(ssehub_connections_rejected_total\{/,
      /sum by \(reason\) \(rate\(ssehub_disconnects_total\{/,
      /ssehub_transport_listening\{/,
      /ssehub_transport_resubscribes_total\{/,
    ]) {
      expect(all).toMatch(needed);
    }
    // Every metric the hub defines itself is on the dashboard.
    const defined = hubMetricNames();
    expect(defined.length).toBeGreaterThan(5);
    for (const name of defined) expect({ name, shown: all.includes(name) }).toEqual({ name, shown: true });
  });
});
