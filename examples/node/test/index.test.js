'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { slugify } = require('../src/index.js');

test('slugify', () => {
  assert.strictEqual(slugify('Hello, World!'), 'hello-world');
  assert.strictEqual(slugify('  Crème brûlée  '), 'creme-brulee');
  assert.strictEqual(slugify('---'), '');
});
