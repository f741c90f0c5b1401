// MIC's pure core: snapshot → computeDesired → plan. No I/O, no clock, no logger (see DESIGN.md import rules).
export * from './snapshot.js';
export * from './skip.js';
export * from './desired.js';
export * from './plan.js';
