/**
 * Encharge's naming conventions, layered between the built-in defaults and the user's config
 * (sync/outbound.ts). Encharge's own person fields are camelCase (`firstName`, `lastName`), so
 * the names go there instead of the built-in `first_name` / `last_name`.
 */
import type { MappingDefaults } from '../types.js';

/**
 * Kommo often leaves `first_name` / `last_name` empty and keeps the whole name in `name`. First
 * name: `firstName` when set, else the first word of `name` ("Ann Marie Lee" -> "Ann"). JSONata's
 * $trim also collapses inner whitespace. A missing name yields no value, so the attribute is left
 * out rather than blanking a name Encharge got elsewhere (a form, an import).
 */
export const FIRST_NAME = `(
  $first := $trim(contact.firstName);
  $name := $trim(contact.name);
  $first ? $first : ($name ? $substringBefore($name, " "))
)`;

/**
 * Last name: `lastName` when set; else what follows the first name in `name` ("Ann Marie Lee" ->
 * "Marie Lee", the usual reading for greetings and for compound surnames such as "de la Cruz");
 * with a `firstName` set, only when `name` starts with it. A one-word name has no last name.
 */
export const LAST_NAME = `(
  $last := $trim(contact.lastName);
  $first := $trim(contact.firstName);
  $name := $trim(contact.name);
  $last ? $last
    : $first ? ($substring($name, 0, $length($first) + 1) = $first & " " ? $substring($name, $length($first) + 1))
    : ($contains($name, " ") ? $substringAfter($name, " "))
)`;

export const enchargeDefaults: MappingDefaults = {
  attributes: {
    firstName: FIRST_NAME,
    lastName: LAST_NAME,
    first_name: null,
    last_name: null,
    // The stage's key, the name the issue and Encharge segments use; the built-in kommo_stage
    // (the same value) is dropped so the person does not carry it twice.
    kommo_current_stage: 'stage.key',
    kommo_stage: null,
  },
};
