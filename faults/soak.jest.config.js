/** `npm run soak`: the soak (faults/soak.ts), with the fault suite's setup; its timeout follows SOAK_MINUTES. */
module.exports = {
  ...require('./jest.config.js'),
  testMatch: ['<rootDir>/faults/soak.ts'],
};
