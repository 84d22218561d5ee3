#!/usr/bin/env node
// Draws the installable app's PNG icons from public/icons/icon.svg with Debian's Chromium (the one the
// browser tests use), once; the PNGs are committed, so building needs neither. The maskable icon has the
// safe zone the platforms crop to (the inner 80 %) around the same drawing. Usage: node scripts/make-icons.mjs
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const iconsDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'public', 'icons');
const svg = readFileSync(join(iconsDir, 'icon.svg'), 'utf8');
const dataUrl = `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}`;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  for (const [name, size, inset] of [['icon-192.png', 192, 0], ['icon-512.png', 512, 0], ['icon-512-maskable.png', 512, 0.1]]) {
    const page = await browser.newPage({ viewport: { width: size, height: size } });
    const pad = Math.round(size * inset);
    await page.setContent(`<body style="margin:0;background:#05090a"><img src="${dataUrl}" style="display:block;margin:${pad}px;width:${size - 2 * pad}px;height:${size - 2 * pad}px"></body>`);
    await page.screenshot({ path: join(iconsDir, name), omitBackground: false });
    await page.close();
    console.log(`wrote public/icons/${name}`);
  }
} finally {
  await browser.close();
}
