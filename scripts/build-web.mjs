#!/usr/bin/env node
/**
 * Bundles the page (src/web) into dist/public with esbuild, after `tsc` has compiled the
 * server: the bundling code is src/server/assets.ts, so the server (which bundles in memory
 * when run from sources) and this build produce the same files.
 */
import { writeWebAssets } from '../dist/server/assets.js';

const files = await writeWebAssets();
for (const f of files) console.log(`wrote ${f}`);
