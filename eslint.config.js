// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import rxjsX from 'eslint-plugin-rxjs-x';
import jsdoc from 'eslint-plugin-jsdoc';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'build/', '.scratch/', 'eslint.config.js', 'bin/', 'native/*.mjs', 'scripts/*.mjs', 'scripts/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  rxjsX.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // marble tests and stream code use non-null assertions on indexed fixtures deliberately
      '@typescript-eslint/no-non-null-assertion': 'off',
      // node:test's `test()` returns a promise that the runner awaits itself
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'describe', 'it'], package: 'node:test' }] }],
    },
  },
  {
    // The library's code: every exported declaration carries a doc comment, which the API
    // reference (`npm run docs`, TypeDoc) is made from.
    files: ['src/**/*.ts', 'streams/**/*.ts', 'operators/**/*.ts'],
    ignores: ['streams/containerd-types/**'],
    plugins: { jsdoc },
    rules: {
      'jsdoc/require-jsdoc': ['error', {
        publicOnly: { esm: true, cjs: false },
        require: { FunctionDeclaration: true, ClassDeclaration: true, ArrowFunctionExpression: false, FunctionExpression: false },
        contexts: ['TSInterfaceDeclaration', 'TSTypeAliasDeclaration', 'ExportNamedDeclaration > VariableDeclaration', 'TSEnumDeclaration'],
      }],
    },
  },
);
