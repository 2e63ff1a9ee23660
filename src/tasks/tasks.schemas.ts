import { z } from 'zod';
import { DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH } from '../db/schema.js';

/** Most tasks one list response carries: the page size cap, and the cap without `limit`. */
export const LIST_CAP = 1000;
/** Deepest `offset` accepted; deeper pages cost a scan of every row skipped. */
export const MAX_OFFSET = 100_000;

/** Characters as PostgreSQL's varchar counts them (code points, not UTF-16 units). */
const characterCount = (value: string) => {
  let count = 0;
  for (const _ of value) count++;
  return count;
};

const required = (what: string) => (issue: { input: unknown }) =>
  issue.input === undefined ? 'Field required' : `${what} must be a string`;

const noNul = (value: string) => !value.includes('\u0000');

const title = z
  .string({ error: required('Title') })
  .trim()
  .refine(noNul, 'Title must not contain NUL characters')
  .refine((value) => value.length > 0, 'Title must not be empty')
  .refine(
    (value) => characterCount(value) <= TITLE_MAX_LENGTH,
    `Title must be at most ${TITLE_MAX_LENGTH} characters`,
  )
  .meta({ description: 'Trimmed; 1–200 characters', maxLength: TITLE_MAX_LENGTH, minLength: 1 });

const description = z
  .string({ error: 'Description must be a string or null' })
  .refine(noNul, 'Description must not contain NUL characters')
  .refine(
    (value) => characterCount(value) <= DESCRIPTION_MAX_LENGTH,
    `Description must be at most ${DESCRIPTION_MAX_LENGTH} characters`,
  )
  .meta({ maxLength: DESCRIPTION_MAX_LENGTH })
  .nullable();

const completed = z.boolean({ error: 'Completed must be true or false' });

const bodyObject = { error: 'Body must be a JSON object' };

export const createTaskBody = z
  .object({ title, description: description.optional() }, bodyObject)
  .meta({ description: 'Unknown fields (id, user_id, timestamps ...) are ignored.' });

export const updateTaskBody = z
  .object(
    {
      title: title.optional(),
      description: description.optional(),
      completed: completed.optional(),
    },
    bodyObject,
  )
  .refine(
    (body) =>
      body.title !== undefined || body.description !== undefined || body.completed !== undefined,
    'Provide at least one of title, description, completed',
  );

export const completeTaskBody = z
  .object({ completed: completed.optional() }, bodyObject)
  .nullish()
  .meta({ description: 'Omit the body (or `completed`) to toggle; give `completed` to set it.' });

const taskId = z
  .string()
  .regex(/^[+-]?\d+$/, 'Task id must be an integer')
  .transform(Number)
  .meta({ description: 'Task id', example: '1' });

const pathUserId = z.string().min(1).meta({ description: "Must equal the token's `sub`" });

export const userTasksParams = z.object({ user_id: pathUserId });
export const userTaskParams = z.object({ user_id: pathUserId, id: taskId });
export const taskParams = z.object({ id: taskId });

export const listTasksQuery = z.object({
  status: z.enum(['all', 'pending', 'completed']).default('all'),
  sort: z
    .enum(['created', 'title'])
    .default('created')
    .meta({ description: '`created`: newest first; `title`: case-insensitive A→Z, ties by id' }),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(LIST_CAP)
    .optional()
    .meta({ description: `Page size, 1–${LIST_CAP}; without it up to ${LIST_CAP} tasks` }),
  offset: z.coerce.number().int().min(0).max(MAX_OFFSET).default(0),
});

export type ListTasksQuery = z.output<typeof listTasksQuery>;

export const taskResponse = z
  .object({
    id: z.number().int(),
    user_id: z.string(),
    title: z.string(),
    description: z.string().nullable(),
    completed: z.boolean(),
    created_at: z.string().meta({ format: 'date-time' }),
    updated_at: z.string().meta({ format: 'date-time' }),
  })
  .meta({ id: 'Task' });

const validationIssue = z.object({
  loc: z.array(z.union([z.string(), z.number()])),
  msg: z.string(),
  type: z.string(),
});

export const errorResponse = z
  .object({ detail: z.union([z.string(), z.array(validationIssue)]) })
  .meta({ id: 'Error' });
