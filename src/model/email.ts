/** Emails are compared case-insensitively everywhere (Kommo, every vendor, our index): one normal form. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Loose on purpose: an address vendors and Kommo accept has one @ and no spaces. */
export function isEmail(value: string): boolean {
  return /^[^@\s]+@[^@\s]+$/.test(value.trim());
}
