// Stands in for ssh2 in the bundle and the single executable. dockerode loads ssh2 eagerly for
// ssh:// DOCKER_HOST addresses, which an agent inside the VM never uses; the real ssh2 costs
// ~2 MB of resident memory and 16 MB of reserved buffers in every agent.
'use strict';
exports.Client = class Client {
  constructor() {
    throw new Error('this build of portstream does not support ssh:// DOCKER_HOST addresses; use unix:// or tcp://');
  }
};
