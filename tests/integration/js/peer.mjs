// A js-libp2p peer driven over stdin/stdout by test_transport_js_interop.py.
//
// Prints one JSON line {"event":"ready","peerId":…,"addrs":[…]} once listening, then
// answers one JSON command per stdin line with one JSON line:
//   {"cmd":"dial_ping","addr":"/ip4/…/tcp/…/p2p/12D3…"}  dial, ping, report identify
//   {"cmd":"peer_info","peerId":"12D3…"}                 what identify recorded
//   {"cmd":"stop"}                                        shut down and exit 0
// Every error becomes {"ok":false,"error":…}; the process never exits on one.

// Node 20 lacks Promise.withResolvers (added in node 22), which js-libp2p 3.x uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')
const readline = await import('node:readline')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const decoder = new TextDecoder()

async function peerInfo (peerId) {
  // identify runs in the background after connecting; wait (bounded) for its record.
  for (let i = 0; i < 100; i++) {
    try {
      const peer = await node.peerStore.get(peerId)
      const agent = peer.metadata.get('AgentVersion')
      if (peer.protocols.length > 0 && agent != null) {
        return {
          protocols: peer.protocols,
          agentVersion: decoder.decode(agent),
          addrs: peer.addresses.map((a) => a.multiaddr.toString())
        }
      }
    } catch (e) { /* not in the peer store yet */ }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('identify did not complete within 5 s')
}

async function handle (line) {
  const msg = JSON.parse(line)
  if (msg.cmd === 'dial_ping') {
    const conn = await node.dial(multiaddr(msg.addr))
    const rttMs = await node.services.ping.ping(multiaddr(msg.addr))
    const info = await peerInfo(conn.remotePeer)
    return { ok: true, remotePeer: conn.remotePeer.toString(), rttMs, ...info }
  }
  if (msg.cmd === 'peer_info') {
    const conn = node.getConnections().find((c) => c.remotePeer.toString() === msg.peerId)
    if (conn == null) throw new Error(`not connected to ${msg.peerId}`)
    return { ok: true, ...(await peerInfo(conn.remotePeer)) }
  }
  if (msg.cmd === 'stop') {
    await node.stop()
    out({ ok: true })
    process.exit(0)
  }
  throw new Error(`unknown command ${msg.cmd}`)
}

out({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString())
})

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  if (line.trim() === '') continue
  try {
    out(await handle(line))
  } catch (e) {
    out({ ok: false, error: String(e && e.stack ? e.stack : e) })
  }
}
await node.stop()
