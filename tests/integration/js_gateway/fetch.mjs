// Fetch ipfs:// URLs through @helia/verified-fetch with our gateway as its only
// trustless gateway (no other router, no libp2p): every block it gets from us is
// verified against its CID before a byte reaches the caller.
//   node fetch.mjs GATEWAY_URL OUT_DIR URL...   -> one JSON line per URL
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

// Node 20 lacks Promise.withResolvers (Node 22), which helia's queues use.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}
const { createVerifiedFetch } = await import('@helia/verified-fetch')
const { createHeliaLight } = await import('helia')
const { trustlessGatewayBlockBroker } = await import('@helia/trustless-gateway-client')
const { fallbackRouter } = await import('@helia/fallback-router')

const [gateway, outDir, ...urls] = process.argv.slice(2)
// A light helia (no libp2p, no delegated routing): its only provider is our gateway.
// The fallback router is wrapped as an ordinary one: helia 7 runs fallback routers
// only after the others finish, and with no other router it waits forever.
const fallback = fallbackRouter({ gateways: [gateway] })
const helia = await createHeliaLight({
  blockBrokers: [trustlessGatewayBlockBroker({ allowInsecure: true, allowLocal: true })],
  routers: [{ name: 'colony-gateway', findProviders: (cid, opts) => fallback.findProviders(cid, opts) }]
}).start()
const vf = await createVerifiedFetch(helia)
let i = 0
for (const url of urls) {
  const res = await vf(url, { signal: AbortSignal.timeout(8000) })
  const body = new Uint8Array(await res.arrayBuffer())
  const out = join(outDir, `out${i++}`)
  await writeFile(out, body)
  console.log(JSON.stringify({ url, status: res.status, type: res.headers.get('content-type'), out, bytes: body.length }))
}
await vf.stop()
await helia.stop()
process.exit(0)
