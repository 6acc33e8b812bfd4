'use strict';

// "Builds" dist/index.js: a copy of the source with a banner.
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
fs.mkdirSync(path.join(root, 'dist'), { recursive: true });
const src = fs.readFileSync(path.join(root, 'src', 'index.js'), 'utf8');
fs.writeFileSync(path.join(root, 'dist', 'index.js'), `// built by hm's example\n${src}`);
console.log('built dist/index.js');
