// Independent CAR reference for test_store_car_interop.py.
//   node car.mjs read FILE.car        -> JSON {roots: [cid], blocks: [[cid, sha256-hex]]}
//   node car.mjs write IN OUT.car     -> imports IN with ipfs-unixfs-importer (CIDv1,
//                                        raw leaves) and writes its DAG as a CARv1; prints the root
//                                        (IN a file, or a directory of files: sharded as a HAMT
//                                        above the importer's 256 KiB threshold)
import fs from 'node:fs'
import crypto from 'node:crypto'
import { Readable } from 'node:stream'
import { CarReader, CarWriter } from '@ipld/car'
import { importer } from 'ipfs-unixfs-importer'
import { MemoryBlockstore } from 'blockstore-core/memory'

const [mode, a, b] = process.argv.slice(2)
if (mode === 'read') {
  const reader = await CarReader.fromBytes(fs.readFileSync(a))
  const roots = (await reader.getRoots()).map(String)
  const blocks = []
  for await (const { cid, bytes } of reader.blocks()) {
    blocks.push([String(cid), crypto.createHash('sha256').update(bytes).digest('hex')])
  }
  process.stdout.write(JSON.stringify({ roots, blocks }))
} else if (mode === 'write') {
  const bs = new MemoryBlockstore()
  let root
  const source = fs.statSync(a).isDirectory()
    ? fs.readdirSync(a).sort().map((n) => ({ path: 'd/' + n, content: fs.readFileSync(a + '/' + n) }))
    : [{ content: fs.readFileSync(a) }]
  for await (const entry of importer(source, bs,
    { cidVersion: 1, rawLeaves: true, shardSplitThresholdBytes: 262144 })) {
    root = entry.cid // the directory (path 'd') comes last
  }
  const { writer, out } = CarWriter.create([root])
  const done = new Promise((resolve, reject) => {
    Readable.from(out).pipe(fs.createWriteStream(b)).on('finish', resolve).on('error', reject)
  })
  const seen = new Set()
  const walk = async (cid) => {
    if (seen.has(String(cid))) return
    seen.add(String(cid))
    const bytes = await bs.get(cid)
    await writer.put({ cid, bytes })
    if (cid.code === 0x70) {
      const { decode } = await import('@ipld/dag-pb')
      for (const link of decode(bytes).Links) await walk(link.Hash)
    }
  }
  await walk(root)
  await writer.close()
  await done
  process.stdout.write(String(root))
} else {
  console.error('usage: car.mjs read FILE | write IN OUT')
  process.exit(2)
}
