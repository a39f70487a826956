import { LabIcon } from '@jupyterlab/ui-components';

/** Two stacked servers with a version arrow: the nbserve sidebar icon. */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 2.5h16a1.5 1.5 0 0 1 1.5 1.5v4.5A1.5 1.5 0 0 1 20 10H4a1.5 1.5 0 0 1-1.5-1.5V4A1.5 1.5 0 0 1 4 2.5zm2.25 2.5a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5zm4 .5v1.5h8V5.5z"/>
    <path d="M4 14h9.2a6.5 6.5 0 0 0-.2 1.5c0 .9.2 1.7.5 2.5V21.5H4A1.5 1.5 0 0 1 2.5 20v-4.5A1.5 1.5 0 0 1 4 14zm2.25 2.5a1.25 1.25 0 1 0 0 2.5 1.25 1.25 0 0 0 0-2.5z"/>
    <path d="M18.5 11.5a4 4 0 1 1-3.8 5.3h1.7a2.5 2.5 0 1 0 .6-2.6l1 1h-3.5v-3.5l1.3 1.3a4 4 0 0 1 2.7-1.5z"/>
  </g>
</svg>`;

export const nbserveIcon = new LabIcon({ name: 'nbserve:deployments', svgstr });
