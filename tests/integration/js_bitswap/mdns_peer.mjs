// A js-libp2p node with @libp2p/mdns, used by test_mdns.py to check that js-libp2p and
// a Colony daemon find each other on a LAN. Listens on every interface, queries every
// second, and prints one JSON line per event:
//   {"event":"ready","peerId":…}                 listening
//   {"event":"discovered","peer":…,"addrs":[…]}  an mDNS answer named this peer
//   {"event":"connected","peer":…}               a connection opened (either direction)
// It exits when stdin closes.

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
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify } = await import('@libp2p/identify')
const { mdns } = await import('@libp2p/mdns')

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/0.0.0.0/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [mdns({ interval: 1000 })],
  services: { identify: identify() }
})
node.addEventListener('peer:discovery', (evt) => {
  out({
    event: 'discovered',
    peer: evt.detail.id.toString(),
    addrs: evt.detail.multiaddrs.map((a) => a.toString())
  })
})
node.addEventListener('connection:open', (evt) => {
  out({ event: 'connected', peer: evt.detail.remotePeer.toString() })
})
out({ event: 'ready', peerId: node.peerId.toString() })
process.stdin.resume()
process.stdin.on('end', async () => { await node.stop(); process.exit(0) })
