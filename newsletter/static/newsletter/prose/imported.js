// What the Substack import puts in a body that the editor's own schema does not know:
// footnote anchors (ids fn-N and fnref-N) and YouTube/Vimeo players. The editor builds
// its document from the body when an article is opened and writes it back on save, so
// without these an edit quietly dropped every footnote target and every player.
// The body is sanitised again on save (newsletter.services.content.sanitize_body), which
// keeps only footnote ids and players from those two hosts.
import { Extension, Node } from "django-prose-editor/editor"

const FOOTNOTE_ID = /^fn(ref)?-\d+$/

export const FootnoteIds = Extension.create({
  name: "footnoteIds",

  addGlobalAttributes() {
    return [
      {
        types: ["paragraph", "listItem", "link"],
        attributes: {
          id: {
            default: null,
            parseHTML: (element) => {
              const id = element.getAttribute("id")
              return id && FOOTNOTE_ID.test(id) ? id : null
            },
            renderHTML: (attributes) => (attributes.id ? { id: attributes.id } : {}),
          },
        },
      },
    ]
  },
})

export const VideoEmbed = Node.create({
  name: "videoEmbed",
  group: "block",
  atom: true,
  selectable: true,
  draggable: true,

  addAttributes() {
    return { src: { default: null } }
  },

  parseHTML() {
    return [{ tag: "iframe[src]", getAttrs: (element) => ({ src: element.getAttribute("src") }) }]
  },

  renderHTML({ node }) {
    return ["iframe", { src: node.attrs.src, allowfullscreen: "" }]
  },

  addNodeView() {
    return ({ node }) => {
      // A label, not the player: the admin loads nothing from the video host.
      const dom = document.createElement("div")
      dom.className = "video-embed-marker"
      dom.contentEditable = "false"
      dom.textContent = `Video player: ${node.attrs.src}`
      return { dom }
    }
  },
})
