import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/',
      '.test-build-*/',
      'node_modules/',
      'coverage/',
      'test-results/',
      '.probe/',
      'bench/results/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: { globals: globals.node },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-non-null-assertion': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  // TypeScript itself resolves names; the core rule does not understand type-only globals.
  { files: ['**/*.ts'], rules: { 'no-undef': 'off' } },
  { files: ['public/**/*.js'], languageOptions: { globals: globals.browser } },
);
