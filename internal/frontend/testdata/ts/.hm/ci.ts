import { pipeline, sh } from '@harmont/hm';

export default pipeline('ci', [sh('echo test', { label: 'test' })]);
