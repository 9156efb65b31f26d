// Sends a fixed story of events to a Cohort server with the official
// Segment Node.js SDK (@segment/analytics-node).
//
// env: COHORT_HOST (e.g. http://127.0.0.1:8080), WRITE_KEY, RUN_ID
// stdout (last line): JSON {"ids": {...}, "message_ids": [...], "responses": [...]}
// exit 0 only if the SDK emitted no 'error' and every HTTP response was 2xx.
import { Analytics } from '@segment/analytics-node'

const host = process.env.COHORT_HOST
const writeKey = process.env.WRITE_KEY
const runId = process.env.RUN_ID
if (!host || !writeKey || !runId) {
  console.error('COHORT_HOST, WRITE_KEY and RUN_ID must be set')
  process.exit(2)
}

const p = 'node'
const ids = {
  user_id: `${p}-user-${runId}`,
  anonymous_id: `${p}-anon-${runId}`,
  email: `${p}.${runId}@example.com`,
  previous_id: `${p}-legacy-${runId}`,
  group_id: `${p}-acme-${runId}`,
  order1: `${p}-o1-${runId}`,
  order2: `${p}-o2-${runId}`,
}

const analytics = new Analytics({
  writeKey,
  host,
  path: '/v1/batch',
  flushAt: 4, // several batches for 9 events
  flushInterval: 200,
  maxRetries: 3,
  httpRequestTimeout: 10000,
})

const errors = []
const messageIds = new Set()
const responses = []
analytics.on('error', (err) => {
  errors.push(String(err?.reason ?? err?.message ?? err?.code ?? JSON.stringify(err)))
})
analytics.on('http_request', (req) => {
  try {
    for (const ev of JSON.parse(req.body).batch) messageIds.add(ev.messageId)
  } catch (e) {
    errors.push(`cannot parse request body: ${e}`)
  }
})
analytics.on('http_response', (res) => {
  responses.push(res.status)
})

const uid = ids.user_id
const traits = { email: ids.email, name: 'Ada Lovelace', plan: 'pro', age: 36 }
analytics.track({ anonymousId: ids.anonymous_id, event: 'Signup Started', properties: { plan: 'pro' } })
analytics.identify({ userId: uid, anonymousId: ids.anonymous_id, traits })
analytics.track({ userId: uid, event: 'Product Viewed', properties: { product_id: 'p-1', price: 10 } })
analytics.track({ userId: uid, event: 'Order Completed', properties: { order_id: ids.order1, revenue: 42.5, currency: 'USD' } })
analytics.track({ userId: uid, event: 'Order Completed', properties: { order_id: ids.order2, revenue: 17.5, currency: 'USD' } })
analytics.page({ userId: uid, name: 'Home', properties: { url: 'https://example.com/', path: '/' } })
analytics.screen({ userId: uid, name: 'Dashboard', properties: { tab: 'overview' } })
analytics.group({ userId: uid, groupId: ids.group_id, traits: { name: 'Acme Inc' } })
analytics.alias({ userId: uid, previousId: ids.previous_id })

try {
  await analytics.closeAndFlush({ timeout: 60000 })
} catch (e) {
  errors.push(`closeAndFlush: ${e}`)
}

const bad = responses.filter((s) => s < 200 || s >= 300)
if (bad.length) errors.push(`non-2xx responses: ${bad.join(',')}`)
if (responses.length === 0) errors.push('no HTTP response at all')
if (messageIds.size !== 9) errors.push(`expected 9 distinct messageIds sent, saw ${messageIds.size}`)

for (const e of errors) console.error(`error: ${e}`)
console.log(JSON.stringify({ ids, message_ids: [...messageIds], responses }))
process.exit(errors.length ? 1 : 0)
