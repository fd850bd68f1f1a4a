
CREATE TABLE public.attachments (
    sha256 character varying(64) NOT NULL,
    mime character varying(100) NOT NULL,
    size integer NOT NULL,
    data bytea NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.conversations (
    id character varying(64) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    last_seq integer NOT NULL,
    seq_reserved integer NOT NULL,
    owner character varying(100) NOT NULL
);

CREATE TABLE public.image_descriptions (
    sha256 character varying(64) NOT NULL,
    describer character varying(200) NOT NULL,
    text text
);

CREATE TABLE public.image_features (
    sha256 character varying(64) NOT NULL,
    encoder_id character varying(200) NOT NULL,
    dim integer NOT NULL,
    vector bytea NOT NULL
);

CREATE TABLE public.parts (
    id integer NOT NULL,
    turn_pk integer NOT NULL,
    "position" integer NOT NULL,
    kind character varying(32) NOT NULL,
    text text,
    attachment_sha256 character varying(64)
);

CREATE SEQUENCE public.parts_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.parts_id_seq OWNED BY public.parts.id;

CREATE TABLE public.reminders (
    id character varying(64) NOT NULL,
    owner character varying(100) NOT NULL,
    conversation_id character varying(64),
    kind character varying(16) NOT NULL,
    text text NOT NULL,
    due_at timestamp with time zone NOT NULL,
    timezone character varying(64) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    fired_at timestamp with time zone,
    cancelled_at timestamp with time zone
);

CREATE TABLE public.turns (
    pk integer NOT NULL,
    id character varying(64) NOT NULL,
    conversation_id character varying(64) NOT NULL,
    role character varying(16) NOT NULL,
    status character varying(16) NOT NULL,
    reply_to character varying(64),
    created_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    error text,
    usage json
);

CREATE SEQUENCE public.turns_pk_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.turns_pk_seq OWNED BY public.turns.pk;

ALTER TABLE ONLY public.parts ALTER COLUMN id SET DEFAULT nextval('public.parts_id_seq'::regclass);

ALTER TABLE ONLY public.turns ALTER COLUMN pk SET DEFAULT nextval('public.turns_pk_seq'::regclass);

INSERT INTO public.attachments VALUES ('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108', 'image/png', 64, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f', '2026-11-23 17:31:52.64921+00');
INSERT INTO public.attachments VALUES ('075f8e3f22fcb592f1c27b086375ceeaacc767bd43a4583cffd38685d3a1d9bb', 'image/png', 9, '\x89504e472066616b65', '2026-11-23 17:31:52.666023+00');

INSERT INTO public.conversations VALUES ('c-alice', '2026-11-23 17:31:52.63912+00', '2026-11-23 17:31:52.656123+00', 20, 0, 'alice');
INSERT INTO public.conversations VALUES ('c-bob', '2026-11-23 17:31:52.640899+00', '2026-11-23 17:31:52.662531+00', 0, 0, 'bob');
INSERT INTO public.conversations VALUES ('f563e97e31ae4f6f8955a30d86c5813d', '2026-11-23 17:31:52.664458+00', '2026-11-23 17:31:52.666214+00', 0, 0, 'bob');

INSERT INTO public.image_descriptions VALUES ('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108', 'ocr', 'HELLO');
INSERT INTO public.image_descriptions VALUES ('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108', 'labels', NULL);

INSERT INTO public.image_features VALUES ('fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108', 'clip-test', 6, '\x000102030001020300010203000102030001020300010203');

INSERT INTO public.parts VALUES (1, 1, 0, 'text', 'what is in this picture?', NULL);
INSERT INTO public.parts VALUES (2, 3, 0, 'text', 'and this one?', NULL);
INSERT INTO public.parts VALUES (3, 3, 1, 'image', NULL, 'fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108');
INSERT INTO public.parts VALUES (4, 2, 0, 'text', 'A cat on a sofa. ünïcödé ✓', NULL);
INSERT INTO public.parts VALUES (5, 4, 0, 'tool_call', '{"call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": false}', NULL);
INSERT INTO public.parts VALUES (6, 4, 1, 'tool_result', '{"call_id": "c1", "name": "add", "status": "ok", "result": 5, "error": null}', NULL);
INSERT INTO public.parts VALUES (7, 4, 2, 'text', 'It is 5.', NULL);
INSERT INTO public.parts VALUES (8, 5, 0, 'text', 'count', NULL);
INSERT INTO public.parts VALUES (9, 7, 0, 'image_request', 'a red square', NULL);
INSERT INTO public.parts VALUES (10, 8, 0, 'image', NULL, '075f8e3f22fcb592f1c27b086375ceeaacc767bd43a4583cffd38685d3a1d9bb');

INSERT INTO public.reminders VALUES ('a9b1a022e7d14bc9ae13f12a84b4ec6f', 'alice', 'c-alice', 'reminder', 'water the plants', '2031-01-02 09:30:00+00', 'Europe/Berlin', '2026-11-23 17:31:52.667374+00', NULL, NULL);
INSERT INTO public.reminders VALUES ('d8293cb5a5654d81b84daee17cbd5188', 'bob', NULL, 'timer', 'tea', '2026-01-01 08:00:00+00', 'UTC', '2026-11-23 17:31:52.670124+00', '2026-01-01 08:00:05+00', NULL);

INSERT INTO public.turns VALUES (1, '095edd7d9eb44dc99c44b673f2b16e78', 'c-alice', 'user', 'completed', NULL, '2026-11-23 17:31:52.641624+00', '2026-11-23 17:31:52.641624+00', NULL, 'null');
INSERT INTO public.turns VALUES (3, '9902c55e866a459faaa0b13f2713b888', 'c-alice', 'user', 'completed', NULL, '2026-11-23 17:31:52.649801+00', '2026-11-23 17:31:52.649801+00', NULL, 'null');
INSERT INTO public.turns VALUES (2, 'b155d54b2cb449aba1d0ee5c9f711d38', 'c-alice', 'assistant', 'completed', '095edd7d9eb44dc99c44b673f2b16e78', '2026-11-23 17:31:52.644387+00', '2026-11-23 17:31:52.651687+00', NULL, '{"completion_tokens": 7}');
INSERT INTO public.turns VALUES (4, '4c818dcb5fa448eb984f10d334180fe3', 'c-alice', 'assistant', 'completed', '9902c55e866a459faaa0b13f2713b888', '2026-11-23 17:31:52.654106+00', '2026-11-23 17:31:52.656123+00', NULL, 'null');
INSERT INTO public.turns VALUES (5, 'cb2c5ff26a294ff0a7c2f5b7d48f05f6', 'c-bob', 'user', 'completed', NULL, '2026-11-23 17:31:52.661777+00', '2026-11-23 17:31:52.661777+00', NULL, 'null');
INSERT INTO public.turns VALUES (6, '3887c74dc8ba41adb9ad4a2d9b739b97', 'c-bob', 'assistant', 'in_progress', 'cb2c5ff26a294ff0a7c2f5b7d48f05f6', '2026-11-23 17:31:52.662531+00', NULL, NULL, 'null');
INSERT INTO public.turns VALUES (7, '72ed8170e4b24ebb8efab9c949155e18', 'f563e97e31ae4f6f8955a30d86c5813d', 'user', 'completed', NULL, '2026-11-23 17:31:52.665248+00', '2026-11-23 17:31:52.665248+00', NULL, 'null');
INSERT INTO public.turns VALUES (8, '8b451976725c4e3c866881eb37d49b30', 'f563e97e31ae4f6f8955a30d86c5813d', 'assistant', 'completed', '72ed8170e4b24ebb8efab9c949155e18', '2026-11-23 17:31:52.666214+00', '2026-11-23 17:31:52.666214+00', NULL, 'null');

SELECT pg_catalog.setval('public.parts_id_seq', 10, true);

SELECT pg_catalog.setval('public.turns_pk_seq', 8, true);

ALTER TABLE ONLY public.attachments
    ADD CONSTRAINT attachments_pkey PRIMARY KEY (sha256);

ALTER TABLE ONLY public.conversations
    ADD CONSTRAINT conversations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.image_descriptions
    ADD CONSTRAINT image_descriptions_pkey PRIMARY KEY (sha256, describer);

ALTER TABLE ONLY public.image_features
    ADD CONSTRAINT image_features_pkey PRIMARY KEY (sha256, encoder_id);

ALTER TABLE ONLY public.parts
    ADD CONSTRAINT parts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.reminders
    ADD CONSTRAINT reminders_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.turns
    ADD CONSTRAINT turns_id_key UNIQUE (id);

ALTER TABLE ONLY public.turns
    ADD CONSTRAINT turns_pkey PRIMARY KEY (pk);

CREATE INDEX ix_conversations_owner ON public.conversations USING btree (owner);

CREATE INDEX ix_parts_turn_pk ON public.parts USING btree (turn_pk);

CREATE INDEX ix_reminders_active_due ON public.reminders USING btree (fired_at, cancelled_at, due_at);

CREATE INDEX ix_reminders_owner ON public.reminders USING btree (owner);

CREATE INDEX ix_turns_conversation_id ON public.turns USING btree (conversation_id);

ALTER TABLE ONLY public.image_descriptions
    ADD CONSTRAINT image_descriptions_sha256_fkey FOREIGN KEY (sha256) REFERENCES public.attachments(sha256);

ALTER TABLE ONLY public.image_features
    ADD CONSTRAINT image_features_sha256_fkey FOREIGN KEY (sha256) REFERENCES public.attachments(sha256);

ALTER TABLE ONLY public.parts
    ADD CONSTRAINT parts_attachment_sha256_fkey FOREIGN KEY (attachment_sha256) REFERENCES public.attachments(sha256);

ALTER TABLE ONLY public.parts
    ADD CONSTRAINT parts_turn_pk_fkey FOREIGN KEY (turn_pk) REFERENCES public.turns(pk);

ALTER TABLE ONLY public.turns
    ADD CONSTRAINT turns_conversation_id_fkey FOREIGN KEY (conversation_id) REFERENCES public.conversations(id);

