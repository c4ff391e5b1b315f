import { defineSuite } from './lib/suite.mjs';

defineSuite('grpc-gzip');
