import { defineSuite } from './lib/suite.mjs';

defineSuite('http');
