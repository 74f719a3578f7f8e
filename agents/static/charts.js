// Small inline-SVG charts for the wallboard (no chart library): hourly offered/answered bars and a level meter.
// Built with DOM calls (CSP allows no inline styles; colours come from desk.css classes).
import {h, t} from './page.js';

const svg = (tag, attrs, ...children) => h(`svg:${tag}`, attrs, ...children);

/**
 * Paired bars per hour: offered (behind) and answered (in front).
 * @param {{hour: number, offered: number, answered: number}[]} hourly
 */
export function hourlyBars(hourly, {width = 560, height = 120} = {}) {
  const hours = Array.from({length: 24},
    (_, hour) => hourly.find((row) => row.hour === hour) || {hour, offered: 0, answered: 0});
  const top = Math.max(1, ...hours.map((row) => Math.max(row.offered || 0, row.answered || 0)));
  const left = 28;
  const bottom = 18;
  const plotHeight = height - bottom - 6;
  const slot = (width - left) / 24;
  const scale = (value) => (value / top) * plotHeight;
  const ticks = top <= 4 ? [top] : [Math.round(top / 2), top];
  return svg('svg', {class: 'chart hourly', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': t('chart_hourly')},
  ticks.map((tick) => {
    const y = 6 + plotHeight - scale(tick);
    return [svg('line', {class: 'grid', x1: left, x2: width, y1: y, y2: y}),
      svg('text', {class: 'axis', x: left - 4, y: y + 4, 'text-anchor': 'end'}, tick)];
  }),
  svg('line', {class: 'base', x1: left, x2: width, y1: 6 + plotHeight, y2: 6 + plotHeight}),
  hours.map((row) => {
    const x = left + row.hour * slot;
    const offered = scale(row.offered || 0);
    const answered = scale(row.answered || 0);
    return svg('g', {},
      svg('title', {}, t('chart_hour_tip', {hour: row.hour, offered: row.offered || 0, answered: row.answered || 0})),
      svg('rect', {class: 'offered', x: x + slot * 0.12, width: slot * 0.76, y: 6 + plotHeight - offered,
        height: offered}),
      svg('rect', {class: 'answered', x: x + slot * 0.28, width: slot * 0.44, y: 6 + plotHeight - answered,
        height: answered}),
      row.hour % 3 === 0
        ? svg('text', {class: 'axis', x: x + slot / 2, y: height - 4, 'text-anchor': 'middle'}, row.hour) : null);
  }));
}

/** A horizontal meter 0–100 % (service level, answer rate); `good` is the level from which it is green. */
export function meter(fraction, {good = 0.8, width = 90, height = 10} = {}) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) {
    return svg('svg', {class: 'chart meter', viewBox: `0 0 ${width} ${height}`, width, height},
      svg('rect', {class: 'track', x: 0, y: 0, width, height, rx: 3}));
  }
  const value = Math.max(0, Math.min(1, fraction));
  const level = value >= good ? 'good' : value >= good * 0.75 ? 'fair' : 'poor';
  return svg('svg', {class: 'chart meter', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': `${Math.round(value * 100)}%`},
  svg('rect', {class: 'track', x: 0, y: 0, width, height, rx: 3}),
  svg('rect', {class: `fill ${level}`, x: 0, y: 0, width: width * value, height, rx: 3}));
}
